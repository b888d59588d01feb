"""`edgellm report RUN_DIR...` (`--markdown`: one table of them all) and `edgellm report --compare
RUN_A RUN_B`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console

from edgellm.bench.summary import RunSummary
from edgellm.report.cost import CostConfig, CostError, parse_overrides
from edgellm.report.html import (
    cost_config,
    run_cost,
    write_comparison,
    write_report_and_summary,
)

console = Console(highlight=False)


def register(app: typer.Typer) -> None:
    @app.command()
    def report(
        run_dirs: list[Path] = typer.Argument(
            ..., help="bench run directories (one with --compare)", metavar="RUN_DIR..."
        ),
        compare: Path | None = typer.Option(None, help="a second run to compare against"),
        accuracy: Path | None = typer.Option(
            None, help="directory of `edgellm eval` outputs to add to the table"
        ),
        out: Path | None = typer.Option(
            None,
            help="--compare: where compare.html goes (default: compare-A-vs-B beside RUN_DIR)",
        ),
        cost: str | None = typer.Option(
            None,
            help="edge against cloud, KEY=VALUE,...: devices, device_price_usd, lifetime_years, "
            "electricity_usd_per_kwh, utilisation, cloud_input_usd_per_mtok, "
            "cloud_output_usd_per_mtok, cloud_name, capacity (req/s, for a run without "
            "--load search); a search run gets the section with the defaults anyway",
        ),
        cost_config: Path | None = typer.Option(
            None, help="YAML or JSON file of the same keys (--cost overrides it)"
        ),
        markdown: bool = typer.Option(
            False,
            help="print one paper-style table of every RUN_DIR, and their throughput CV against "
            "context length, as Markdown",
        ),
    ) -> None:
        """Recompute the summary from raw records; write report.html, CSV and PNG plots."""
        if compare is not None and len(run_dirs) != 1:
            console.print("[red]error:[/red] --compare takes one RUN_DIR")
            raise typer.Exit(2)
        for path in (*run_dirs, compare):
            if path is not None and not (
                (path / "records.jsonl").exists() or any(path.glob("repeat-*/records.jsonl"))
            ):
                console.print(f"[red]error:[/red] {path} is not a bench run (no records.jsonl)")
                raise typer.Exit(2)
        if compare is not None:
            _compare(run_dirs[0], compare, out)
            return
        summaries = []
        for run_dir in run_dirs:
            summary = _report(run_dir, accuracy, cost, cost_config, quiet=markdown)
            summaries.append((run_dir.name, summary))
        if markdown:
            from edgellm.report.tables import markdown_tables

            print(markdown_tables(summaries), end="")


def _compare(run_dir: Path, compare: Path, out: Path | None) -> None:
    target = out or run_dir.parent / f"compare-{run_dir.name}-vs-{compare.name}"
    from edgellm.report.html import comparison_rows

    path = write_comparison(run_dir, compare, target)
    method, header, rows = comparison_rows(run_dir, compare)
    from edgellm.report.tables import print_grouped

    title = f"B = {compare.name} vs A = {run_dir.name}: {method}"
    print_grouped(console, title, header, rows)
    console.print(f"comparison: {path}")


def _report(
    run_dir: Path, accuracy: Path | None, cost: str | None, cost_config: Path | None, quiet: bool
) -> RunSummary:
    """Write `run_dir`'s report and return its summary; print its tables unless `quiet`."""
    cost_settings, capacity = None, None
    if cost is not None or cost_config is not None:
        cost_settings, capacity = _cost(run_dir, cost, cost_config)
    path, summary = write_report_and_summary(run_dir, accuracy, cost_settings, capacity)
    from edgellm.report.tables import print_extras, print_table

    if quiet:
        return summary
    print_table(console, summary)
    print_extras(console, summary)
    if (run_dir / "cost.json").exists():
        from edgellm.report.cost import CostAnalysis
        from edgellm.report.tables import cost_rows, print_rows

        analysis = CostAnalysis.model_validate_json((run_dir / "cost.json").read_text())
        note, header, rows = cost_rows(analysis)
        print_rows(console, "edge or cloud: USD per million tokens", header, rows)
        console.print(note)
    from edgellm.report.turns import print_turns

    print_turns(console, run_dir)
    console.print(f"report: {path}")
    return summary


def _cost(run_dir: Path, text: str | None, path: Path | None) -> tuple[CostConfig, float | None]:
    """The cost settings of `--cost-config` then `--cost`, checked before anything is written."""
    values: dict[str, Any] = {}
    try:
        if path is not None:
            loaded = yaml.safe_load(path.read_text())
            if not isinstance(loaded, dict):
                raise CostError(f"{path}: expected a mapping of cost settings")
            values |= loaded
        if text is not None:
            values |= parse_overrides(text)
        capacity = values.pop("capacity", None)
        settings = cost_config(run_dir, **values)
        run_cost(run_dir, settings, float(capacity) if capacity is not None else None)
    except (OSError, yaml.YAMLError, CostError, ValidationError, TypeError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    return settings, float(capacity) if capacity is not None else None
