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


def build(engine: Engine, tag: str, context: Path) -> str:
    """The image id `tag` has after build.sh built `context`."""
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
