"""`edgellm serve` (all configured models; the bundled two by default) and `edgellm node`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from edgellm.config import EdgeLLMConfig, EngineConfig, ModelConfig, ServerConfig
from edgellm.errors import EdgeLLMError
from edgellm.models.bundled import get_bundled

err = Console(stderr=True)


def _fail(exc: EdgeLLMError) -> None:
    err.print(f"[red]error:[/red] {exc.message}")
    raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        config: Path | None = typer.Option(
            None,
            "--config",
            "-c",
            help="gateway YAML (models, remote backends, policies, auth); "
            "default: the two bundled models in-process",
        ),
        host: str | None = typer.Option(None, help="bind address (default 127.0.0.1)"),
        port: int | None = typer.Option(None, help="port (default 8080)"),
        log_level: str = typer.Option("info", help="uvicorn/EdgeLLM log level"),
    ) -> None:
        """Serve the OpenAI-compatible gateway: `model` names a model; `auto` or a policy routes."""
        from edgellm.node.server import run

        try:
            cfg = EdgeLLMConfig.from_yaml(config) if config else EdgeLLMConfig()
        except EdgeLLMError as exc:
            _fail(exc)
            return
        if host is not None:
            cfg.server.host = host
        if port is not None:
            cfg.server.port = port
        run(cfg, log_level=log_level)

    @app.command()
    def node(
        model: str = typer.Option(
            ..., "--model", "-m", help="bundled name, path to a .gguf, or repo_id/file.gguf"
        ),
        name: str | None = typer.Option(None, help="name clients use (default: --model)"),
        host: str = typer.Option("127.0.0.1", help="bind address"),
        port: int = typer.Option(8080, help="port"),
        threads: int = typer.Option(0, help="llama.cpp threads (0 = all available CPUs)"),
        ctx: int = typer.Option(8192, help="context window in tokens"),
        parallel: int = typer.Option(
            1, "--parallel", "-np", help="slots decoded together (continuous batching when > 1)"
        ),
        kv_unified: bool = typer.Option(
            False,
            "--kv-unified",
            help="with --parallel > 1: one KV cache of --ctx cells shared by all slots "
            "(default: --ctx cells per slot)",
        ),
        max_queue: int = typer.Option(32, help="requests that may wait before 429"),
        seed: int | None = typer.Option(None, help="default seed for requests without one"),
        log_level: str = typer.Option("info"),
    ) -> None:
        """Serve one model: an EdgeLLM node, as deployed on each edge device."""
        from edgellm.node.server import run

        engine = EngineConfig(
            n_threads=threads,
            n_ctx=ctx,
            parallel=parallel,
            kv_unified=kv_unified,
            max_queue=max_queue,
            seed=seed,
        )
        cfg = node_config(model, name=name, host=host, port=port, engine=engine)
        run(cfg, log_level=log_level)


def node_config(
    model: str, *, name: str | None, host: str, port: int, engine: EngineConfig
) -> EdgeLLMConfig:
    """What `edgellm node` serves: one model, named `name` (default: the bundled name or the
    file's stem), in the tier its catalog entry gives (a local file: edge-small)."""
    served = name or (Path(model).stem if model.endswith(".gguf") else model)
    bundled = get_bundled(model)
    served_model = ModelConfig(
        name=served.replace(" ", "-"),
        source=model,
        engine=engine,
        tier=bundled.tier if bundled is not None else "edge-small",
    )
    return EdgeLLMConfig(server=ServerConfig(host=host, port=port), models=[served_model])
