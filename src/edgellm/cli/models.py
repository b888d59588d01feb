"""`edgellm models ...`: list, inspect, pull and prepare models."""

from __future__ import annotations

import json
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from edgellm.errors import EdgeLLMError
from edgellm.models import (
    BundledStatus,
    GGUFInfo,
    LocalModel,
    bundled_status,
    list_bundled,
    read_gguf_info,
    resolve_model,
)

app = typer.Typer(
    help="Bundled models, model references and GGUF metadata.",
    no_args_is_help=True,
)

_STATE_STYLES = {"ready": "green", "not-assembled": "yellow", "missing": "red"}

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
RefArgument = Annotated[
    str,
    typer.Argument(
        help="Bundled model name, path to a .gguf file, or Hugging Face owner/repo/file.gguf.",
        show_default=False,
    ),
]


@app.command("list")
def list_models(as_json: JsonOption = False) -> None:
    """Show the bundled models and whether they are ready to load."""
    entries = [(model, bundled_status(model)) for model in list_bundled()]
    if as_json:
        payload = [
            {
                **model.model_dump(mode="json"),
                "state": status.state,
                "path": str(status.path) if status.path else None,
                "file_size": _ready_size(status),
                "detail": status.detail,
            }
            for model, status in entries
        ]
        typer.echo(json.dumps(payload, indent=2))
        return
    table = Table(title="Bundled models")
    for column in ("Name", "Tier", "Size", "Quant", "Context", "Status"):
        table.add_column(column, no_wrap=True)
    for model, status in entries:
        size = _ready_size(status)
        table.add_row(
            model.name,
            model.tier,
            _human_size(size) if size is not None else "-",
            model.quantization,
            str(model.default_context_size),
            Text(status.state, style=_STATE_STYLES[status.state]),
        )
    console = Console()
    console.print(table)
    # Paths are long: below the table they stay whole and copyable on an 80-column terminal.
    width = max(len(model.name) for model, _ in entries)
    for model, status in entries:
        where = str(status.path) if status.path else status.detail
        console.print(Text(f"{model.name:<{width}}  {where}"), soft_wrap=True)


@app.command()
def inspect(
    ref: RefArgument,
    as_json: JsonOption = False,
    show_template: Annotated[
        bool, typer.Option("--show-template", help="Also print the chat template.")
    ] = False,
    sha256: Annotated[
        bool, typer.Option("--sha256", help="Also hash the whole file (slow on big files).")
    ] = False,
) -> None:
    """Resolve REF and show its GGUF metadata."""
    try:
        model = resolve_model(ref)
        info = read_gguf_info(model.path, with_sha256=sha256)
    except EdgeLLMError as error:
        _fail(error)
    if as_json:
        payload = {
            "model": model.model_dump(mode="json", exclude={"bundled"}),
            "gguf": info.model_dump(mode="json"),
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    Console().print(_info_table(model, info))
    if show_template:
        # Plain echo: a Jinja template is full of brackets that rich would read as markup.
        typer.echo(info.chat_template if info.chat_template else "(no chat template)")


@app.command()
def pull(ref: RefArgument) -> None:
    """Fetch REF if needed (assemble a bundled model, download from the hub); print its path."""
    try:
        model = resolve_model(ref)
    except EdgeLLMError as error:
        _fail(error)
    typer.echo(str(model.path))


@app.command()
def prepare() -> None:
    """Make every bundled model ready to load; fast and idempotent once done."""
    failed = False
    for bundled in list_bundled():
        try:
            model = resolve_model(bundled.name)
        except EdgeLLMError as error:
            _print_error(error)
            failed = True
            continue
        typer.echo(f"{model.name}: {model.path}")
    if failed:
        raise typer.Exit(code=1)


def _info_table(model: LocalModel, info: GGUFInfo) -> Table:
    table = Table(title=f"{model.name} ({model.source})", show_header=False)
    table.add_column("Field", style="bold", no_wrap=True)
    table.add_column("Value", overflow="fold")
    heads = f"{info.head_count or '?'} (kv {info.head_count_kv or '?'})"
    template = f"yes, {len(info.chat_template)} chars" if info.chat_template else "none"
    parameters = f"{info.parameter_count:,}"
    if info.size_label:
        parameters += f" ({info.size_label})"
    rows = [
        ("Path", str(info.path)),
        ("File size", _human_size(info.file_size)),
        ("Name", info.name or "-"),
        ("Architecture", info.architecture),
        ("Parameters", parameters),
        ("Quantization", info.quantization),
        ("Context length", _optional(info.context_length)),
        ("Embedding length", _optional(info.embedding_length)),
        ("Blocks", _optional(info.block_count)),
        ("Attention heads", heads),
        ("Vocabulary", _optional(info.vocab_size)),
        ("Tokenizer", info.tokenizer_model or "-"),
        ("BOS / EOS ids", f"{_optional(info.bos_token_id)} / {_optional(info.eos_token_id)}"),
        ("Chat template", template),
        ("License", info.license or "-"),
    ]
    if info.sha256:
        rows.append(("SHA-256", info.sha256))
    for field, value in rows:
        table.add_row(field, Text(value))
    return table


def _ready_size(status: BundledStatus) -> int | None:
    if status.state != "ready" or status.path is None:
        return None
    return status.path.stat().st_size


def _optional(value: int | None) -> str:
    return "-" if value is None else str(value)


def _human_size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _print_error(error: EdgeLLMError) -> None:
    message = Text("error: ", style="bold red") + Text(error.message, style="red")
    Console(stderr=True).print(message, soft_wrap=True)


def _fail(error: EdgeLLMError) -> NoReturn:
    _print_error(error)
    raise typer.Exit(code=1)
