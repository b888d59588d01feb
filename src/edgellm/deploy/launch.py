"""The one way to launch a node: a ModelConfig (name, source, aliases, every EngineConfig field)
becomes the `edgellm node` command line that serves it. The K3s renderer, the testbed, the local
bench server and the benchmark scripts all build their node commands here, and `edgellm node`
turns the same flags back into the same ModelConfig (`cli/serve.py`), so a field set in a
cluster.yaml or a testbed spec reaches the node."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from edgellm.config import EngineConfig, ModelConfig, Tier
from edgellm.models.bundled import get_bundled


def _flag(name: str) -> Callable[[object], list[str]]:
    return lambda value: [] if value is None else [name, str(value)]


def _flash_attn(value: object) -> list[str]:
    return ["--flash-attn", {None: "auto", True: "on", False: "off"}[value]]  # type: ignore[index]


def _kv_unified(value: object) -> list[str]:
    return ["--kv-unified" if value else "--no-kv-unified"]


# EngineConfig field -> its `edgellm node` arguments. Every field has an entry (a unit test
# checks), so a new engine setting cannot be dropped on the way to a node.
ENGINE_FLAGS: dict[str, Callable[[object], list[str]]] = {
    "n_ctx": _flag("--ctx"),
    "n_threads": _flag("--threads"),
    "n_batch": _flag("--batch"),
    "n_ubatch": _flag("--ubatch"),
    "seed": _flag("--seed"),
    "flash_attn": _flash_attn,
    "parallel": _flag("--parallel"),
    "kv_unified": _kv_unified,
    "max_queue": _flag("--max-queue"),
    "default_max_tokens": _flag("--default-max-tokens"),
}


def engine_args(engine: EngineConfig) -> list[str]:
    args: list[str] = []
    for field, to_args in ENGINE_FLAGS.items():
        args += to_args(getattr(engine, field))
    return args


def node_args(
    model: ModelConfig, *, host: str, port: int, log_level: str | None = None
) -> list[str]:
    """`edgellm node ...` arguments (without the program) that serve `model` as configured."""
    args = ["node", "--model", model.source, "--name", model.name]
    for alias in model.aliases:
        args += ["--alias", alias]
    args += ["--tier", model.tier, "--host", host, "--port", str(port)]
    args += engine_args(model.engine)
    if log_level is not None:
        args += ["--log-level", log_level]
    return args


def node_command(
    model: ModelConfig,
    *,
    host: str = "127.0.0.1",
    port: int,
    log_level: str | None = "warning",
    python: str = sys.executable,
) -> list[str]:
    """The whole command line of a local node process run by `python`."""
    return [python, "-m", "edgellm", *node_args(model, host=host, port=port, log_level=log_level)]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now, for a process about to be launched on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, process: subprocess.Popen[bytes], timeout_s: float) -> str | None:
    """Poll `url`/health until it answers 200 (None), or say why it never will: the launched
    `process` exited, or `timeout_s` passed."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0) as client:
        while True:
            if process.poll() is not None:
                return f"exited with code {process.returncode}"
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{url}/health").status_code == 200:
                    return None
            if time.monotonic() > deadline:
                return f"not healthy in {timeout_s:g} s"
            time.sleep(0.2)


def served_model(
    source: str,
    *,
    name: str | None = None,
    aliases: list[str] | None = None,
    tier: Tier | None = None,
    engine: EngineConfig | None = None,
) -> ModelConfig:
    """The model `edgellm node --model SOURCE` serves: named `name` (default: the bundled name or
    the file's stem), in `tier` (default: its catalog entry's; a local file: edge-small)."""
    served = name or (Path(source).stem if source.endswith(".gguf") else source)
    if tier is None:
        bundled = get_bundled(source)
        tier = bundled.tier if bundled is not None else "edge-small"
    return ModelConfig(
        name=served.replace(" ", "-"),
        source=source,
        aliases=aliases or [],
        engine=engine or EngineConfig(),
        tier=tier,
    )
