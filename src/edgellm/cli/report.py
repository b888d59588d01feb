"""`edgellm report RUN_DIR` and `edgellm report --compare RUN_A RUN_B`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from edgellm.report.html import write_comparison, write_report

console = Console(highlight=False)


def register(app: typer.Typer) -> None:
    @app.command()
    def report(
        run_dir: Path = typer.Argument(..., help="a bench run directory"),
        compare: Path | None = typer.Option(None, help="a second run to compare against"),
        accuracy: Path | None = typer.Option(
            None, help="directory of `edgellm eval` outputs to add to the table"
        ),
        out: Path | None = typer.Option(
            None,
            help="--compare: where compare.html goes (default: compare-A-vs-B beside RUN_DIR)",
        ),
    ) -> None:
        """Recompute the summary from raw records; write report.html, CSV and PNG plots."""
        for path in (run_dir, compare):
            if path is not None and not (
                (path / "records.jsonl").exists() or any(path.glob("repeat-*/records.jsonl"))
            ):
                console.print(f"[red]error:[/red] {path} is not a bench run (no records.jsonl)")
                raise typer.Exit(2)
        if compare is not None:
            target = out or run_dir.parent / f"compare-{run_dir.name}-vs-{compare.name}"
            from edgellm.report.html import comparison_rows

            path = write_comparison(run_dir, compare, target)
            method, header, rows = comparison_rows(run_dir, compare)
            from edgellm.report.tables import print_grouped

            title = f"B = {compare.name} vs A = {run_dir.name}: {method}"
            print_grouped(console, title, header, rows)
            console.print(f"comparison: {path}")
            return
        path = write_report(run_dir, accuracy)
        from edgellm.bench.run import finalize
        from edgellm.report.html import load_accuracy
        from edgellm.report.tables import print_extras, print_table

        summary = finalize(run_dir, accuracy=load_accuracy(accuracy) if accuracy else None)
        print_table(console, summary)
        print_extras(console, summary)
        from edgellm.report.turns import print_turns

        print_turns(console, run_dir)
        console.print(f"report: {path}")
