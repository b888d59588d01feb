"""`report.html` for one run, `compare.html` for two; plus CSV next to them."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from edgellm.bench.devices import get_profile
from edgellm.bench.records import RequestRecord
from edgellm.bench.run import (
    CONFIG,
    RECORDS,
    SAMPLES,
    SEARCH,
    BenchConfig,
    finalize,
    load_records,
    load_samples,
    repeat_dirs,
)
from edgellm.bench.search import SearchResult
from edgellm.bench.stats import Difference, bootstrap, welch
from edgellm.bench.summary import (
    REPEATED_FIELDS,
    RunSummary,
    decode_tps,
    measured,
    prefill_tps,
    repeat_values,
)
from edgellm.report.cost import CostAnalysis, CostConfig, CostError, analyse, measure_inputs
from edgellm.report.plots import all_plots, cost_vs_rate
from edgellm.report.tables import (
    COLUMNS,
    accuracy_cell,
    cell,
    cost_rows,
    repeat_rows,
    search_rows,
    slo_rows,
    write_csv,
)

_TEMPLATE = jinja2.Template(
    """<!doctype html>
<html><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 1200px; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
td, th { border: 1px solid #ccc; padding: 3px 7px; text-align: right; }
th { background: #f3f3f3; } td.l { text-align: left; }
img { max-width: 49%; } pre { background: #f7f7f7; padding: 1em; overflow-x: auto; }
</style></head><body>
<h1>{{ title }}</h1>
{% for section in sections %}
<h2>{{ section.heading }}</h2>
{% if section.note %}<p>{{ section.note }}</p>{% endif %}
{% if section.rows %}<table><tr>{% for h in section.header %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in section.rows %}<tr>{% for c in row %}
<td{% if loop.index <= section.left %} class="l"{% endif %}>{{ c }}</td>{% endfor %}</tr>
{% endfor %}</table>{% endif %}
{% for img in section.images %}<img src="{{ img }}" alt="{{ img }}">{% endfor %}
{% if section.pre %}<pre>{{ section.pre }}</pre>{% endif %}
{% endfor %}
</body></html>
""",
    autoescape=True,
)


def load_accuracy(directory: Path) -> dict[str, dict[str, float]]:
    """{model: {task: accuracy}} from the eval summaries (summary.json) under `directory`."""
    found: dict[str, dict[str, float]] = {}
    for path in sorted(directory.rglob("summary.json")):
        try:
            data = json.loads(path.read_text())
            found.setdefault(data["model"], {})[data["task"]] = float(data["accuracy"]["accuracy"])
        except (ValueError, KeyError, TypeError):
            continue
    return found


def _fmt(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def _sections(summary: RunSummary, images: list[str]) -> list[dict[str, Any]]:
    table_rows = [
        [cell(r, f, fmt) for f, _, fmt in COLUMNS] + [accuracy_cell(r)] for r in summary.table
    ]
    dist_rows = []
    for name, dist, fmt in (
        ("TTFT (s)", summary.ttft_s, "{:.3f}"),
        ("end-to-end latency (s)", summary.latency_s, "{:.3f}"),
        ("inter-token latency (ms)", summary.itl_ms, "{:.1f}"),
        ("decode tok/s", summary.decode_tps, "{:.1f}"),
        ("prefill tok/s", summary.prefill_tps, "{:.0f}"),
    ):
        dist_rows.append(
            [name, dist.n]
            + [_fmt(getattr(dist, k), fmt) for k in ("mean", "std", "p50", "p90", "p95", "p99")]
        )
    cv_rows = [
        [
            f"{b.context_low}-{b.context_high}",
            b.n,
            _fmt(b.prefill_tps_mean, "{:.0f}"),
            _fmt(b.prefill_cv, "{:.3f}"),
            _fmt(b.decode_tps_mean, "{:.1f}"),
            _fmt(b.decode_cv, "{:.3f}"),
        ]
        for b in summary.cv_by_context
    ]
    energy = summary.energy or {}
    source = ", ".join(summary.server_timings_source) or "none (client-side estimates only)"
    extra: list[dict[str, Any]] = []
    if summary.warnings:
        extra.append({"heading": "Warnings", "pre": "\n".join(summary.warnings)})
    header, rows = slo_rows(summary)
    if rows:
        extra.append(
            {
                "heading": "SLO attainment and goodput",
                "note": "Errored requests count as misses; requests cancelled by the benchmark "
                "are left out. itl is each request's largest gap between chunks; tpot is "
                "(e2e - ttft) / (completion tokens - 1). Goodput: requests (and their output "
                "tokens) that met every bound, per second of the stage.",
                "header": header,
                "rows": rows,
                "left": 1,
            }
        )
    note, header, rows = search_rows(summary)
    if rows:
        extra.append(
            {"heading": "Capacity search", "note": note, "header": header, "rows": rows, "left": 0}
        )
    header, rows = repeat_rows(summary)
    if rows:
        n = summary.repeats.n if summary.repeats else 0
        extra.append(
            {
                "heading": f"{n} repeated runs",
                "note": "Mean and Student-t 95 % confidence interval of each figure across the "
                "runs; the table above holds the means, the distributions pool all requests.",
                "header": header,
                "rows": rows,
                "left": 3,
            }
        )
    return [
        *extra,
        {
            "heading": "Per-model results",
            "note": "Warm-up requests excluded. Throughputs prefer server-reported timings "
            f"({source}); client-side estimates are in records.csv.",
            "header": [h for _, h, _ in COLUMNS] + ["accuracy"],
            "rows": table_rows,
            "left": 2,
        },
        {
            "heading": "Distributions",
            "header": ["metric", "n", "mean", "std", "p50", "p90", "p95", "p99"],
            "rows": dist_rows,
            "left": 1,
        },
        {
            "heading": "Coefficient of variation by context length",
            "header": [
                "prompt tokens",
                "n",
                "prefill tok/s",
                "prefill CV",
                "decode tok/s",
                "decode CV",
            ],
            "rows": cv_rows,
            "left": 1,
        },
        {
            "heading": "Energy and cost (power model)",
            "note": "Modelled from CPU utilisation with the device profile's idle/busy watts "
            "(not a measurement of the device); RAPL host energy when readable.",
            "pre": json.dumps(energy, indent=2) if energy else "no resource samples",
        },
        {"heading": "Figures", "images": images},
    ]


def write_records_csv(records: list[RequestRecord], path: Path) -> Path:
    fields = [
        "request_id", "model", "stage", "warmup", "conversation_id", "turn", "start_s", "ok",
        "status", "error", "ttft_s", "e2e_s", "itl_mean_s", "prompt_tokens",
        "completion_tokens", "chunks", "finish_reason", "client_prefill_tps",
        "client_decode_tps", "server_prefill_tps", "server_decode_tps", "energy_j",
    ]  # fmt: skip
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for r in records:
            writer.writerow(r.model_dump())
    return path


COST = "cost.json"


def cost_config(run_dir: Path, **overrides: Any) -> CostConfig:
    """The cost defaults, with the run's own electricity price (`bench --price-kwh`), then
    `overrides` (a --cost-config file's, then --cost's)."""
    base = {"electricity_usd_per_kwh": _config(run_dir).cost.electricity_usd_per_kwh}
    return CostConfig.model_validate(base | overrides)


def run_cost(
    run_dir: Path, config: CostConfig | None = None, capacity_rps: float | None = None
) -> CostAnalysis:
    """Edge against cloud for `run_dir` (see report/cost.py); raises CostError when the run has
    no capacity at an SLO and none is given."""
    parts = []
    for d in _run_parts(run_dir):
        search = d / SEARCH
        parts.append(
            (
                load_records(d / RECORDS),
                load_samples(d / SAMPLES),
                SearchResult.model_validate_json(search.read_text()) if search.exists() else None,
            )
        )
    device = get_profile(_config(run_dir).power_profile)
    inputs = measure_inputs(parts, device, capacity_rps)
    return analyse(inputs, device, config or cost_config(run_dir))


def write_report(
    run_dir: Path,
    accuracy_dir: Path | None = None,
    cost: CostConfig | None = None,
    capacity_rps: float | None = None,
) -> Path:
    """Recompute everything from the raw files of `run_dir`; write report.html, CSV, PNGs.
    The edge-or-cloud section (and cost.json) when the run found a capacity at its SLO, or
    `capacity_rps` is given."""
    return write_report_and_summary(run_dir, accuracy_dir, cost, capacity_rps)[0]


def write_report_and_summary(
    run_dir: Path,
    accuracy_dir: Path | None = None,
    cost: CostConfig | None = None,
    capacity_rps: float | None = None,
) -> tuple[Path, RunSummary]:
    """`write_report`, and the summary it recomputed (for a caller that prints it too)."""
    accuracy = load_accuracy(accuracy_dir) if accuracy_dir else None
    summary = finalize(run_dir, accuracy=accuracy)
    records = run_records(run_dir)
    samples = [s for d in _run_parts(run_dir) for s in load_samples(d / SAMPLES)]
    images = all_plots(records, samples, summary, run_dir / "plots")
    write_csv(summary.table, run_dir / "table.csv")
    write_records_csv(records, run_dir / "records.csv")
    config = json.loads((run_dir / CONFIG).read_text())
    analysis: CostAnalysis | None = None
    try:
        analysis = run_cost(run_dir, cost, capacity_rps)
    except CostError:
        (run_dir / COST).unlink(missing_ok=True)
    if analysis is not None:
        (run_dir / COST).write_text(analysis.model_dump_json(indent=2) + "\n")
        images.append(cost_vs_rate(analysis, run_dir / "plots" / "cost_rate.png"))
    sections = _sections(summary, [f"plots/{p.name}" for p in images])
    if analysis is not None:
        note, header, rows = cost_rows(analysis)
        sections.insert(
            -1,
            {
                "heading": "Edge or cloud: USD per million tokens",
                "note": note,
                "header": header,
                "rows": rows,
                "left": 0,
            },
        )
    sections.append({"heading": "Configuration", "pre": json.dumps(config, indent=2)})
    html = _TEMPLATE.render(title=f"EdgeLLM bench: {run_dir.name}", sections=sections)
    out = run_dir / "report.html"
    out.write_text(html, encoding="utf-8")
    return out, summary


def _config(run_dir: Path) -> BenchConfig:
    return BenchConfig.model_validate_json((run_dir / CONFIG).read_text())


def _run_parts(run_dir: Path) -> list[Path]:
    """The directories holding a run's records: itself, or its repeats."""
    cfg = _config(run_dir)
    if cfg.repeat > 1:
        return [d for d in repeat_dirs(run_dir, cfg) if (d / RECORDS).exists()]
    return [run_dir]


def run_records(run_dir: Path) -> list[RequestRecord]:
    return [r for d in _run_parts(run_dir) for r in load_records(d / RECORDS)]


PER_REQUEST: tuple[tuple[str, Any], ...] = (
    ("ttft_s", lambda r: r.ttft_s),
    ("latency_s", lambda r: r.e2e_s),
    ("itl_mean_ms", lambda r: r.itl_mean_s * 1e3 if r.itl_mean_s is not None else None),
    ("decode_tps", decode_tps),
    ("prefill_tps", prefill_tps),
)


def comparison_rows(run_a: Path, run_b: Path) -> tuple[str, list[str], list[list[str]]]:
    """Whether B differs from A, figure by figure: Welch's t-test on the runs' values when both
    were repeated, else a bootstrap on per-request values (the method is named)."""
    cfg_a, cfg_b = _config(run_a), _config(run_b)
    diffs: list[tuple[str, str, str, Difference]] = []
    if cfg_a.repeat > 1 and cfg_b.repeat > 1:
        values = [repeat_values([finalize(d) for d in _run_parts(run)]) for run in (run_a, run_b)]
        order = {name: k for k, name in enumerate(REPEATED_FIELDS)}
        for key in sorted(
            set(values[0]) & set(values[1]), key=lambda k: (k[0], k[1], order.get(k[2], 99), k[2])
        ):
            diffs.append((*key, welch(values[0][key], values[1][key])))
        method = f"Welch's t-test on per-run values ({cfg_a.repeat} vs {cfg_b.repeat} repeats)"
    else:
        ok = [[r for r in measured(run_records(run)) if r.ok] for run in (run_a, run_b)]
        groups = sorted({(r.model, r.stage) for r in ok[0]} & {(r.model, r.stage) for r in ok[1]})
        pairs = [
            (model, stage, [[r for r in rs if (r.model, r.stage) == (model, stage)] for rs in ok])
            for model, stage in groups
        ] or [("", "all", ok)]
        for model, stage, (a, b) in pairs:
            for name, get in PER_REQUEST:
                va = [float(v) for r in a if (v := get(r)) is not None]
                vb = [float(v) for r in b if (v := get(r)) is not None]
                if va and vb:
                    diffs.append((model, stage, name, bootstrap(va, vb)))
        method = "bootstrap of per-request values (no repeats; 2,000 resamples, seed 0)"
    header = [
        "model",
        "stage",
        "figure",
        "A mean",
        "B mean",
        "B - A",
        "95 % CI",
        "p",
        "significant",
    ]

    def num(v: float | None) -> str:
        return "-" if v is None else f"{v:.4g}"

    rows = [
        [
            model,
            stage,
            name,
            num(d.mean_a),
            num(d.mean_b),
            num(d.difference),
            f"{num(d.low)} .. {num(d.high)}" if d.low is not None else "-",
            num(d.p_value),
            "-" if d.significant is None else "yes" if d.significant else "no",
        ]
        for model, stage, name, d in diffs
    ]
    return method, header, rows


def write_comparison(run_a: Path, run_b: Path, out_dir: Path) -> Path:
    """Side-by-side table and overlaid latency CDFs of two runs."""
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    summaries = [finalize(run_a), finalize(run_b)]
    method, diff_header, diff_rows = comparison_rows(run_a, run_b)
    rows = []
    for run, summary in zip((run_a, run_b), summaries, strict=True):
        for r in summary.table:
            rows.append([run.name] + [cell(r, f, fmt) for f, _, fmt in COLUMNS])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for run in (run_a, run_b):
        ok = [r for r in measured(run_records(run)) if r.ok]
        for ax, values in zip(axes, ([r.ttft_s for r in ok], [r.e2e_s for r in ok]), strict=True):
            data = np.sort(np.array([v for v in values if v is not None]))
            if data.size:
                ax.step(data, np.arange(1, data.size + 1) / data.size, where="post", label=run.name)
    axes[0].set_title("TTFT CDF")
    axes[1].set_title("end-to-end latency CDF")
    for ax in axes:
        ax.set_xlabel("seconds")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "compare_latency.png", dpi=110)
    plt.close(fig)
    sections = [
        {
            "heading": "Per-model results",
            "header": ["run"] + [h for _, h, _ in COLUMNS],
            "rows": rows,
            "left": 3,
        },
        {
            "heading": "Is the difference significant?",
            "note": f"B = {run_b.name}, A = {run_a.name}; {method}; significant at the 5 % level "
            "when the 95 % interval of B - A excludes 0.",
            "header": diff_header,
            "rows": diff_rows,
            "left": 3,
        },
        {"heading": "Latency", "images": ["compare_latency.png"]},
    ]
    html = _TEMPLATE.render(title=f"EdgeLLM: {run_a.name} vs {run_b.name}", sections=sections)
    out = out_dir / "compare.html"
    out.write_text(html, encoding="utf-8")
    return out
