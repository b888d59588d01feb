"""Node runtimes: what container serves one model on a Pi. Registered by name; `cluster.yaml`
picks one per model (`nodes.<model>.runtime`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edgellm.config import ModelConfig
from edgellm.deploy.launch import node_args

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
    """`edgellm node`: bundled names, local paths and hub references all resolve; every field of
    the model's config (aliases, tier, the whole engine) is on the command line."""
    engine = model.engine.model_copy(update={"n_threads": threads(model, work)})
    served = model.model_copy(update={"engine": engine})
    args = node_args(served, host="0.0.0.0", port=PORT)
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
        # Comma-separated names (llama-server's --alias): the model name first, then its aliases.
        "--alias",
        ",".join([model.name, *model.aliases]),
        "--host",
        "0.0.0.0",
        "--port",
        str(PORT),
        "-c",
        str(engine.n_ctx * engine.parallel),
        "-np",
        str(engine.parallel),
        "-b",
        str(engine.n_batch),
        "-ub",
        str(engine.n_ubatch),
        "-fa",
        {None: "auto", True: "on", False: "off"}[engine.flash_attn],
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
