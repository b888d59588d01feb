"""The paper-style per-model table: rich for the terminal, CSV for machines, HTML rows."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgellm.bench.stats import MeanCI, Proportion, wilson
from edgellm.bench.summary import ModelRow, RunSummary
from edgellm.report.cost import CostAnalysis

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


def _pct_ci(p: Proportion | None) -> str:
    """`95.0% (76.4-99.1)`: the proportion and its Wilson 95 % interval."""
    if p is None or p.value is None or p.low is None or p.high is None:
        return "-"
    return f"{p.value:.1%} ({p.low * 100:.1f}-{p.high * 100:.1f})"


def _num(value: float | None, fmt: str = "{:.3g}") -> str:
    return "-" if value is None else fmt.format(value)


def slo_rows(summary: RunSummary) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the SLO table: one row per stage, then the whole run."""
    slo = summary.slo
    if slo is None:
        return [], []
    keys = list(slo.limits)
    header = ["stage", "counted", "met", "missed", "errored", "cancelled", "attainment (95 % CI)"]
    header += [f"{k} ≤ {slo.limits[k]:g} s" for k in keys]
    header += ["load req/s", "goodput req/s", "goodput tok/s"]
    rows = []
    results = [*slo.stages, slo.overall] if len(slo.stages) > 1 else [slo.overall]
    for r in results:
        rows.append(
            [r.stage, str(r.counted), str(r.met), str(r.missed), str(r.errored)]
            + [str(r.cancelled), _pct_ci(summary.slo_intervals.get(r.stage))]
            + [_pct_ci(summary.slo_intervals.get(f"{r.stage}:{k}")) for k in keys]
            + [_num(r.request_rate), _num(r.goodput_rps), _num(r.goodput_tps, "{:.1f}")]
        )
    return header, rows


def search_rows(summary: RunSummary) -> tuple[str, list[str], list[list[str]]]:
    search = summary.search
    if search is None:
        return "", [], []
    unit = f"{search.precision:.0%} of the rate" if search.relative else f"{search.precision:g}/s"
    if search.capacity_rate is None:
        verdict = f"no rate met the target ({search.reason})"
    else:
        upper = search.lowest_failing_rate
        verdict = f"capacity {search.capacity_rate:.4g} sessions/s" + (
            f" (below {upper:.4g}, precision {unit}; {search.reason})"
            if upper is not None
            else f" (no failing rate found; {search.reason})"
        )
    note = f"{search.arrivals} arrivals, target attainment {search.target:.0%}: {verdict}"
    header = [
        "step",
        "sessions/s",
        "requests",
        "attainment (95 % CI)",
        "goodput req/s",
        "goodput tok/s",
    ]
    rows = [
        [
            str(s.step),
            f"{s.rate:.4g}",
            str(s.requests),
            _pct_ci(
                wilson(round(s.attainment * s.requests), s.requests)
                if s.attainment is not None
                else None
            ),
            _num(s.goodput_rps),
            _num(s.goodput_tps, "{:.1f}"),
        ]
        for s in search.steps
    ]
    return note, header, rows


def repeat_rows(summary: RunSummary) -> tuple[list[str], list[list[str]]]:
    """One row per figure: mean, 95 % interval, spread across the repeats."""
    reps = summary.repeats
    if reps is None:
        return [], []
    header = ["model", "stage", "figure", "n", "mean", "95 % CI low", "95 % CI high", "std"]

    def figure_row(model: str, stage: str, name: str, ci: MeanCI) -> list[str]:
        mean, low, high = (_num(v, "{:.4g}") for v in (ci.mean, ci.low, ci.high))
        return [model, stage, name, str(ci.n), mean, low, high, _num(ci.std, "{:.3g}")]

    rows = [
        figure_row(row.model, row.stage, name, ci)
        for row in reps.rows
        for name, ci in row.figures.items()
    ]
    extra = dict(reps.slo)
    if reps.capacity_rate is not None:
        extra["capacity_rate"] = reps.capacity_rate
    rows += [figure_row("", "all", name, ci) for name, ci in extra.items()]
    return header, rows


def cost_rows(cost: CostAnalysis) -> tuple[str, list[str], list[list[str]]]:
    """The verdict, then one row per request rate: edge alone, cloud alone, edge + spill."""
    i, c = cost.inputs, cost.config
    if cost.crossover_rps is None:
        crossover = "none: the edge's electricity alone costs more per token than the cloud"
    else:
        crossover = f"{cost.crossover_rps:.4g} req/s" + (
            "" if cost.edge_cheaper_within_slo else " (beyond the edge's capacity at the SLO)"
        )
    note = (
        f"{c.devices} x {i.device} (USD {cost.device_price_usd:g} over "
        f"{cost.lifetime_years:g} years, {cost.idle_watts:g} W idle, USD "
        f"{c.electricity_usd_per_kwh:g}/kWh, serving {c.utilisation:.0%} of the time) against "
        f"{c.cloud_name} (USD {c.cloud_input_usd_per_mtok:g} input, "
        f"{c.cloud_output_usd_per_mtok:g} output per million tokens). Measured: capacity "
        f"{i.capacity_rps:.4g} req/s per device ({i.capacity_source}), "
        f"{i.dynamic_joules_per_request:.1f} J above idle per request, "
        f"{i.input_tokens_per_request:.0f} input + {i.output_tokens_per_request:.0f} output "
        f"tokens per request. Fixed cost USD {cost.fixed_usd_per_hour:.4g}/h; edge energy USD "
        f"{cost.edge_energy_usd_per_mtok:.3g} and cloud USD {cost.cloud_usd_per_mtok:.3g} per "
        f"million tokens. Crossover: {crossover}. Beyond {cost.capacity_rps:.4g} req/s the edge "
        "alone misses the SLO and the gateway must spill to the cloud."
    )
    # USD per million tokens, input + output in the workload's mix
    header = [
        "req/s",
        "edge alone USD/Mtok",
        "cloud USD/Mtok",
        "edge + spill USD/Mtok",
        "spilled",
        "cheaper",
    ]
    rows = []
    for p in cost.points:
        edge = "edge" if p.edge_usd_per_mtok is not None else "edge + spill"
        cheaper = edge if p.spill_usd_per_mtok < p.cloud_usd_per_mtok else "cloud"
        rows.append(
            [
                f"{p.rate_rps:.4g}",
                "misses SLO" if p.edge_usd_per_mtok is None else f"{p.edge_usd_per_mtok:.4g}",
                f"{p.cloud_usd_per_mtok:.4g}",
                f"{p.spill_usd_per_mtok:.4g}",
                f"{p.cloud_share:.0%}",
                cheaper,
            ]
        )
    return note, header, rows


def print_rows(console: Console, title: str, header: list[str], rows: list[list[str]]) -> None:
    table = Table(title=title)
    for h in header:
        table.add_column(h, justify="left" if h in ("stage", "model", "figure") else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def print_grouped(console: Console, title: str, header: list[str], rows: list[list[str]]) -> None:
    """Rows whose first two columns are model and stage: one table per model and stage,
    without those two columns (fits a terminal)."""
    groups: dict[tuple[str, str], list[list[str]]] = {}
    for row in rows:
        groups.setdefault((row[0], row[1]), []).append(row[2:])
    for (model, stage), part in groups.items():
        print_rows(console, f"{title}\n{model} {stage}".rstrip(), header[2:], part)


def print_extras(console: Console, summary: RunSummary) -> None:
    """SLO attainment and goodput, the capacity search, repeat intervals, warnings."""
    header, rows = slo_rows(summary)
    if rows:
        # one column per stage, one row per figure: fits a terminal, as print_table does
        table = Table(title="SLO attainment and goodput (errors count as misses)")
        table.add_column("stage")
        for row in rows:
            table.add_column(row[0], justify="right")
        for k, name in enumerate(header[1:], 1):
            table.add_row(name, *(row[k] for row in rows))
        console.print(table)
    note, header, rows = search_rows(summary)
    if rows:
        print_rows(console, "capacity search", header, rows)
        console.print(note)
    header, rows = repeat_rows(summary)
    if rows:
        assert summary.repeats is not None
        title = f"{summary.repeats.n} repeated runs: mean and Student-t 95 % interval"
        print_grouped(console, title, header, rows)
    for warning in summary.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")


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


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_tables(runs: Sequence[tuple[str, RunSummary]]) -> str:
    """The paper-style table of several runs, one row per run and model, then their throughput
    variability against context length, as Markdown (for a results page)."""
    header = ["run", "model", *(h for _, h, _ in COLUMNS[2:]), "accuracy"]
    rows = [
        [name, row.model, *(cell(row, f, fmt) for f, _, fmt in COLUMNS[2:]), accuracy_cell(row)]
        for name, summary in runs
        for row in summary.table
    ]
    cv_header = ["run", "prompt tokens", "n", "decode tok/s", "decode CV"]
    cv_header += ["prefill tok/s", "prefill CV"]
    cv_rows = [
        [
            name,
            f"{b.context_low}-{b.context_high}",
            str(b.n),
            _num(b.decode_tps_mean, "{:.1f}"),
            _num(b.decode_cv, "{:.2f}"),
            _num(b.prefill_tps_mean, "{:.0f}"),
            _num(b.prefill_cv, "{:.2f}"),
        ]
        for name, summary in runs
        for b in summary.cv_by_context
    ]
    return _markdown(header, rows) + "\n\n" + _markdown(cv_header, cv_rows) + "\n"
