"""deploy/image/build.sh (`make image`) on a small Dockerfile of deploy/Dockerfile's shape (a
`build` stage, a runtime stage, a HEALTHCHECK): a rebuild after a change removes what the replaced
image left, an unchanged rebuild is all cache hits, and the health check survives the build."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.container.engine import IMAGE_DIR, Engine, unique

DOCKERFILE = """\
ARG PYTHON_VERSION=3.11
ARG DEBIAN=bookworm
FROM python:${PYTHON_VERSION}-slim-${DEBIAN} AS build
COPY payload /payload
RUN cp /payload /built
FROM python:${PYTHON_VERSION}-slim-${DEBIAN} AS runtime
COPY --from=build /built /built
HEALTHCHECK --interval=30s CMD ["python", "-c", "pass"]
"""


def run_build(engine: Engine, tag: str, context: Path) -> str:
    """build.sh on `context` (its Dockerfile): what it printed."""
    env = {"ENGINE": engine.name, "CONTEXT": str(context)}
    env["DOCKERFILE"] = str(context / "Dockerfile")
    done = subprocess.run(
        ["bash", str(IMAGE_DIR / "build.sh"), tag],
        env=os.environ | env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def build(engine: Engine, tag: str, context: Path) -> str:
    """The image id `tag` has after build.sh built `context`."""
    run_build(engine, tag, context)
    return image_id(engine, tag)


def image_id(engine: Engine, ref: str) -> str:
    done = engine.run("image", "inspect", "--format", "{{.Id}}", ref, check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


def leftovers(engine: Engine, tag: str) -> list[str]:
    out = engine.run(
        "images", "-q", "--filter", "dangling=true", "--filter", f"label=io.edgellm.image={tag}"
    ).stdout
    return out.split()


def test_rebuild_removes_the_replaced_image_and_keeps_the_cache(
    engine: Engine, image: str, tmp_path: Path
) -> None:
    # `image` first: the base image the Dockerfile names is then on this machine.
    tag = f"localhost/{unique('edgellm-imagetest')}:t"
    (tmp_path / "Dockerfile").write_text(DOCKERFILE)
    payload = tmp_path / "payload"
    try:
        payload.write_text("one\n")
        first = build(engine, tag, tmp_path)
        assert first and build(engine, tag, tmp_path) == first  # unchanged: the same image
        assert leftovers(engine, tag) == []

        payload.write_text("two\n")
        second = build(engine, tag, tmp_path)
        assert second and second != first
        assert image_id(engine, first) == ""  # the replaced image is gone ...
        assert leftovers(engine, tag) == []  # ... with everything it alone used

        inspected = json.loads(engine.run("image", "inspect", tag).stdout)[0]
        config = inspected.get("Config") or {}
        # podman reports it beside Config, docker inside it
        check = inspected.get("Healthcheck") or config.get("Healthcheck") or {}
        assert check.get("Test", [])[-3:] == ["python", "-c", "pass"], inspected
    finally:
        repo = tag.rsplit(":", 1)[0]
        engine.run("rmi", "--force", tag, f"{repo}-build:t", check=False)
        for left in leftovers(engine, tag):
            engine.run("rmi", "--force", left, check=False)


def test_each_architectures_base_is_kept_and_the_base_name_pointed_back_at_it(
    engine: Engine, image: str, tmp_path: Path
) -> None:
    """After a build for another architecture left the Dockerfile's base name on that
    architecture's image, the next build points the name back at the kept base of its own
    instead of pulling or making it again."""
    version = unique("0test").replace("-", "")
    base = f"docker.io/library/python:{version}-slim-bookworm"
    host = "arm64" if os.uname().machine == "aarch64" else "amd64"
    other = "amd64" if host == "arm64" else "arm64"
    kept = f"localhost/edgellm-base:{version}-slim-bookworm-{host}"
    real = "docker.io/library/python:3.11-slim-bookworm"  # made by the `image` fixture's build
    tag = f"localhost/{unique('edgellm-basetest')}:t"
    (tmp_path / "Dockerfile").write_text(DOCKERFILE.replace("=3.11", f"={version}", 1))
    (tmp_path / "payload").write_text("one\n")
    empty = tmp_path / "empty.tar"
    subprocess.run(["tar", "-cf", str(empty), "-T", "/dev/null"], check=True)
    fake = ""
    arch_of = ("image", "inspect", "--format", "{{.Architecture}}")
    try:
        assert engine.run(*arch_of, real).stdout.strip() == host
        # what a build for the other architecture left under the base name
        fake = engine.run("import", "--arch", other, str(empty), base).stdout.split()[-1]
        engine.run("tag", real, kept)
        printed = run_build(engine, tag, tmp_path)
        assert f"the {host} one kept as {kept}" in printed
        assert "pulling" not in printed and "stand-in" not in printed
        assert engine.run(*arch_of, base).stdout.strip() == host
    finally:
        repo = tag.rsplit(":", 1)[0]
        engine.run("rmi", "--force", tag, f"{repo}-build:t", check=False)
        for left in leftovers(engine, tag):
            engine.run("rmi", "--force", left, check=False)
        engine.run("untag", real, base, check=False)
        engine.run("untag", real, kept, check=False)
        if fake:
            engine.run("rmi", "--force", fake, check=False)
