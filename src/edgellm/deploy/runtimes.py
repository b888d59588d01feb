"""Node runtimes: what container serves one model on a Pi. Registered by name; `cluster.yaml`
picks one per model (`nodes.<model>.runtime`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edgellm.config import ModelConfig

if TYPE_CHECKING:
    from edgellm.deploy.spec import ClusterSpec, NodeWorkload

PORT = 8080
MODELS_DIR = "/models"

Runtime = Callable[["ClusterSpec", ModelConfig, "NodeWorkload"], dict[str, Any]]
RUNTIMES: dict[str, Runtime] = {}


def register(name: str) -> Callable[[Runtime], Runtime]:
    def add(fn: Runtime) -> Runtime:
        RUNTIMES[name] = fn
        return fn

    return add


def threads(model: ModelConfig, work: NodeWorkload) -> int:
    """llama.cpp threads: the configured count, else the CPU limit (more would be throttled)."""
    if model.engine.n_threads:
        return model.engine.n_threads
    limit = work.resources.cpu_limit
    if limit is None:
        return 0
    cores = float(limit[:-1]) / 1000 if limit.endswith("m") else float(limit)
    return max(1, math.floor(cores))


@register("edgellm")
def edgellm_node(spec: ClusterSpec, model: ModelConfig, work: NodeWorkload) -> dict[str, Any]:
    """`edgellm node`: bundled names, local paths and hub references all resolve."""
    engine = model.engine
    args = [
        "node",
        "--model",
        model.source,
        "--name",
        model.name,
        "--host",
        "0.0.0.0",
        "--port",
        str(PORT),
        "--threads",
        str(threads(model, work)),
        "--ctx",
        str(engine.n_ctx),
        "--parallel",
        str(engine.parallel),
        "--max-queue",
        str(engine.max_queue),
    ]
    if engine.seed is not None:
        args += ["--seed", str(engine.seed)]
    return {"image": spec.image, "command": ["edgellm"], "args": args}


@register("llama-server")
def llama_server(spec: ClusterSpec, model: ModelConfig, work: NodeWorkload) -> dict[str, Any]:
    """Upstream llama.cpp's server: the same OpenAI API, `/health` (503 while loading) and
    `timings`, so the gateway treats it like an EdgeLLM node. It needs a GGUF file under /models;
    it has no `/v1/loglikelihood` and its own metric names (`--metrics`)."""
    engine = model.engine
    # llama-server splits -c among its slots; EdgeLLM's n_ctx is what one request may use.
    args = [
        "-m",
        model.source,
        "--alias",
        model.name,
        "--host",
        "0.0.0.0",
        "--port",
        str(PORT),
        "-c",
        str(engine.n_ctx * engine.parallel),
        "-np",
        str(engine.parallel),
        "--metrics",
    ]
    n = threads(model, work)
    if n:
        args += ["-t", str(n)]
    if engine.seed is not None:
        args += ["--seed", str(engine.seed)]
    return {"image": spec.llama_server_image, "args": args}


def check_source(runtime: str, model: ModelConfig) -> str | None:
    """Why `model` cannot run on `runtime`, or None."""
    if runtime == "llama-server" and not (
        model.source.startswith(f"{MODELS_DIR}/") and model.source.endswith(".gguf")
    ):
        return (
            f"{model.name}: the llama-server runtime needs `source` to be a GGUF file under "
            f"{MODELS_DIR}/ (got {model.source!r})"
        )
    return None
