"""`edgellm serve` (all configured models; the bundled two by default) and `edgellm node`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer
from pydantic import ValidationError
from rich.console import Console

from edgellm.config import (
    DEFAULT_MAX_TOKENS,
    EdgeLLMConfig,
    EngineConfig,
    ModelConfig,
    ServerConfig,
    Tier,
    format_validation_error,
)
from edgellm.deploy.launch import served_model
from edgellm.errors import EdgeLLMError

err = Console(stderr=True)
FlashAttn = Literal["auto", "on", "off"]


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
        alias: list[str] = typer.Option(
            [], "--alias", help="another name clients may use (repeatable)"
        ),
        tier: Tier | None = typer.Option(
            None, help="tier in /v1/models (default: the catalog's; a local file: edge-small)"
        ),
        host: str = typer.Option("127.0.0.1", help="bind address"),
        port: int = typer.Option(8080, help="port"),
        threads: int = typer.Option(0, help="llama.cpp threads (0 = all available CPUs)"),
        ctx: int = typer.Option(8192, help="context window in tokens"),
        batch: int = typer.Option(512, help="prompt tokens evaluated per llama_decode call"),
        ubatch: int = typer.Option(512, help="physical batch size (llama.cpp n_ubatch)"),
        flash_attn: FlashAttn = typer.Option(
            "auto", help="flash attention: auto lets llama.cpp decide"
        ),
        parallel: int = typer.Option(
            1, "--parallel", "-np", help="slots decoded together (continuous batching when > 1)"
        ),
        kv_unified: bool = typer.Option(
            False,
            "--kv-unified/--no-kv-unified",
            help="with --parallel > 1: one KV cache of --ctx cells shared by all slots "
            "(default: --ctx cells per slot)",
        ),
        max_queue: int = typer.Option(32, help="requests that may wait before 429"),
        default_max_tokens: int = typer.Option(
            DEFAULT_MAX_TOKENS, help="max_tokens for requests that give none"
        ),
        seed: int | None = typer.Option(None, help="default seed for requests without one"),
        serves: list[str] = typer.Option(
            [],
            "--serves",
            help="generation and/or embeddings (repeatable; default: a bundled model's own, "
            "else generation)",
        ),
        log_level: str = typer.Option("info"),
    ) -> None:
        """Serve one model: an EdgeLLM node, as deployed on each edge device."""
        from edgellm.node.server import run

        try:
            engine = EngineConfig(
                n_threads=threads,
                n_ctx=ctx,
                n_batch=batch,
                n_ubatch=ubatch,
                flash_attn={"auto": None, "on": True, "off": False}[flash_attn],
                parallel=parallel,
                kv_unified=kv_unified,
                max_queue=max_queue,
                default_max_tokens=default_max_tokens,
                seed=seed,
            )
        except ValidationError as exc:
            err.print(f"[red]error:[/red] {format_validation_error(exc)}")
            raise typer.Exit(2) from exc
        served = served_model(model, name=name, aliases=alias, tier=tier, engine=engine)
        if serves:
            try:
                served = ModelConfig.model_validate(served.model_dump() | {"serves": serves})
            except ValidationError as exc:
                err.print(f"[red]error:[/red] {format_validation_error(exc)}")
                raise typer.Exit(2) from exc
        run(node_config(served, host=host, port=port), log_level=log_level)


def node_config(model: ModelConfig, *, host: str, port: int) -> EdgeLLMConfig:
    """What `edgellm node` serves: the one model, on host:port."""
    return EdgeLLMConfig(server=ServerConfig(host=host, port=port), models=[model])
