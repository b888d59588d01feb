"""The paper-style per-model table: rich for the terminal, CSV for machines, HTML rows."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgellm.report.analysis import ModelRow, RunSummary

COLUMNS: tuple[tuple[str, str, str], ...] = (
    # (ModelRow field, header, format)
    ("model", "model", "{}"),
    ("stage", "stage", "{}"),
    ("requests", "requests", "{}"),
    ("errors", "errors", "{}"),
    ("generation_tps", "generation tok/s", "{:.1f}"),
    ("decode_tps_mean", "decode tok/s", "{:.1f}"),
    ("prefill_tps_mean", "prefill tok/s", "{:.0f}"),
    ("ttft_s_mean", "TTFT s", "{:.3f}"),
    ("ttft_s_p99", "TTFT p99 s", "{:.3f}"),
    ("latency_s_mean", "latency s", "{:.2f}"),
    ("latency_s_p99", "latency p99 s", "{:.2f}"),
    ("itl_ms_p50", "ITL p50 ms", "{:.1f}"),
    ("memory_gb_peak", "memory GB", "{:.2f}"),
    ("cpu_percent_mean", "CPU %", "{:.0f}"),
    ("joules_per_token", "J/token", "{:.3f}"),
)


def cell(row: ModelRow, field: str, fmt: str) -> str:
    value = getattr(row, field)
    return "-" if value is None else fmt.format(value)


def accuracy_cell(row: ModelRow) -> str:
    if not row.accuracy:
        return "-"
    return ", ".join(f"{task} {acc:.1%}" for task, acc in sorted(row.accuracy.items()))


def print_table(console: Console, summary: RunSummary) -> None:
    """One column per model and stage, one row per metric (fits a terminal)."""
    table = Table(title="per-model results (warm-up excluded)")
    table.add_column("metric")
    for row in summary.table:
        table.add_column(f"{row.model}\n{row.stage}", justify="right")
    for field, header, fmt in COLUMNS[2:]:
        table.add_row(header, *(cell(row, field, fmt) for row in summary.table))
    table.add_row("accuracy", *(accuracy_cell(row) for row in summary.table))
    console.print(table)


def write_csv(rows: Sequence[ModelRow], path: Path) -> Path:
    fields = list(ModelRow.model_fields)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            data = row.model_dump()
            data["accuracy"] = accuracy_cell(row) if row.accuracy else ""
            writer.writerow(data)
    return path
