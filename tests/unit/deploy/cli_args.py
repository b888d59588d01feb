"""Command lines that images and manifests run, checked against the real `edgellm` CLI."""

from __future__ import annotations

from typing import Any

import typer

from edgellm.cli import app


def check_cli_args(args: list[str]) -> None:
    """Every --option in `edgellm ARGS` exists on that sub-command."""
    cmd: Any = typer.main.get_command(app).commands[args[0]]  # type: ignore[attr-defined]
    options = {
        opt
        for p in cmd.params
        for opt in [*getattr(p, "opts", []), *getattr(p, "secondary_opts", [])]
    }
    for arg in args[1:]:
        if arg.startswith("--"):
            assert arg in options, f"`edgellm {args[0]}` has no option {arg}"
