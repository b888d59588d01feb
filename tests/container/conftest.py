"""The container suite: the image from deploy/Dockerfile, built once per session by
deploy/image/build.sh (`make image`), run as node, gateway, compose project and played K3s
manifests. Skipped, with the reason, where no container engine runs containers, or with
EDGELLM_CONTAINER_TESTS=0."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.container.engine import ROOT, Engine, pick_engine

IMAGE = os.environ.get("EDGELLM_TEST_IMAGE", "localhost/edgellm:test")
# The image build compiles llama.cpp: the first test's set-up may take this long.
BUILD_TIMEOUT_S = 2700
PODMAN_COMPOSE = "podman-compose==1.6.0"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The session's first test builds the image in its set-up; pytest-timeout counts set-up.
    for item in items:
        if "tests/container/" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.timeout(BUILD_TIMEOUT_S + 600))


@pytest.fixture(scope="session")
def engine() -> Engine:
    if os.environ.get("EDGELLM_CONTAINER_TESTS") == "0":
        pytest.skip("EDGELLM_CONTAINER_TESTS=0")
    name, why = pick_engine()
    if name is None:
        pytest.skip(f"no container engine runs containers here: {why}")
    return Engine(name)


@pytest.fixture(scope="session")
def image(engine: Engine) -> str:
    """deploy/Dockerfile built once per session (later sessions on the same machine reuse the
    engine's layer cache; a fresh machine builds everything, base image included)."""
    log = Path(tempfile.gettempdir()) / f"edgellm-image-build-{os.getpid()}.log"
    start = time.monotonic()
    with log.open("w") as out:
        done = subprocess.run(
            ["bash", str(ROOT / "deploy" / "image" / "build.sh"), IMAGE],
            env=os.environ | {"ENGINE": engine.name},
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=BUILD_TIMEOUT_S,
        )
    if done.returncode != 0:
        raise AssertionError(f"the image build failed; see {log}:\n{log.read_text()[-3000:]}")
    print(f"image {IMAGE} ready in {time.monotonic() - start:.0f} s (log: {log})")
    return IMAGE


@pytest.fixture(scope="session")
def podman_compose(engine: Engine) -> Path:
    """podman-compose from PyPI, pinned, in a venv of its own under the project's cache."""
    if engine.name != "podman":
        pytest.skip("the compose test drives podman-compose; this machine uses docker")
    cache = Path(os.environ.get("EDGELLM_CACHE_DIR", Path.home() / ".cache" / "edgellm"))
    venv = cache / "podman-compose"
    exe = venv / "bin" / "podman-compose"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "pip"), "install", "--quiet", PODMAN_COMPOSE]
        subprocess.run(pip, check=True)
    return exe


@pytest.fixture
def cleanup(engine: Engine) -> Iterator[list[str]]:
    """Containers a test starts, removed after it whatever happened."""
    names: list[str] = []
    yield names
    engine.remove(*names)
