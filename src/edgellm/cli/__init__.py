"""The `edgellm` command line. Each concept registers its own sub-commands."""

from __future__ import annotations

import typer

from edgellm.cli import bench, chat, deploy, models, report, router, serve, testbed
from edgellm.cli import eval as eval_cmd

app = typer.Typer(
    name="edgellm",
    help="EdgeLLM: serve and measure small LLMs on CPU-only edge clusters.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(models.app, name="models")
app.add_typer(testbed.app, name="testbed")
app.add_typer(deploy.app, name="deploy")
app.add_typer(router.app, name="router")
serve.register(app)
chat.register(app)
eval_cmd.register(app)
bench.register(app)
report.register(app)
