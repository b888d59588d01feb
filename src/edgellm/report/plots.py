"""matplotlib PNG figures of a run (Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from edgellm.bench.records import RequestRecord, ResourceSample
from edgellm.bench.stats import Proportion, wilson
from edgellm.bench.summary import ModelRow, RunSummary, measured
from edgellm.report.cost import CostAnalysis


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def throughput_per_model(rows: Sequence[ModelRow], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    labels = [f"{r.model}\n{r.stage}" for r in rows]
    gen = [r.generation_tps or 0.0 for r in rows]
    dec = [r.decode_tps_mean or 0.0 for r in rows]
    x = np.arange(len(rows))
    ax.bar(x - 0.2, gen, 0.4, label="generation (all requests)")
    ax.bar(x + 0.2, dec, 0.4, label="decode (per request, mean)")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("tokens / s")
    ax.legend(fontsize=8)
    return _save(fig, path)


def latency_cdf(records: Sequence[RequestRecord], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ok = [r for r in measured(records) if r.ok]
    for label, values in (
        ("TTFT", [r.ttft_s for r in ok if r.ttft_s is not None]),
        ("end-to-end", [r.e2e_s for r in ok if r.e2e_s is not None]),
    ):
        if values:
            data = np.sort(np.array(values))
            ax.step(data, np.arange(1, data.size + 1) / data.size, where="post", label=label)
    ax.set_xlabel("seconds")
    ax.set_ylabel("fraction of requests")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    return _save(fig, path)


def resource_timeline(samples: Sequence[ResourceSample], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    if samples:
        t0 = samples[0].t_s
        t = [s.t_s - t0 for s in samples]
        ax.plot(t, [s.cpu_percent for s in samples], color="tab:blue", label="CPU %")
        for s, ts in zip(samples, t, strict=True):
            if s.phase != "idle":
                color = "tab:orange" if s.phase == "prefill" else "tab:green"
                ax.axvspan(ts - 0.5 * (t[1] - t[0] if len(t) > 1 else 0.5), ts, color=color,
                           alpha=0.12, lw=0)  # fmt: skip
        mem = ax.twinx()
        mem.plot(t, [s.rss_bytes / 1e9 for s in samples], color="tab:red", label="RSS GB")
        mem.set_ylabel("RSS GB", color="tab:red")
    ax.set_xlabel("seconds (shading: orange prefill, green decode)")
    ax.set_ylabel("CPU % (100 = one core)", color="tab:blue")
    return _save(fig, path)


def cv_vs_context(summary: RunSummary, path: Path) -> Path:
    """Throughput against context length (mean per prompt-length bucket, bars of one standard
    deviation) above its coefficient of variation, for prefill and decode."""
    fig, (rate, cv) = plt.subplots(2, 1, figsize=(6, 5), sharex=True)
    rows = summary.cv_by_context
    x = np.arange(len(rows))

    def nan(value: float | None) -> float:
        return np.nan if value is None else value

    for phase, marker in (("prefill", "o"), ("decode", "s")):
        means = np.array([nan(getattr(b, f"{phase}_tps_mean")) for b in rows])
        cvs = np.array([nan(getattr(b, f"{phase}_cv")) for b in rows])
        rate.errorbar(x, means, yerr=np.nan_to_num(cvs * means), fmt=f"{marker}-", capsize=3,
                      label=phase)  # fmt: skip
        cv.plot(x, cvs, f"{marker}-", label=phase)
    rate.set_ylabel("tokens / s per request")
    rate.set_ylim(bottom=0)
    rate.legend(fontsize=8)
    cv.set_ylabel("coefficient of variation")
    cv.set_ylim(bottom=0)
    cv.set_xticks(x, [f"{b.context_low}-{b.context_high}\nn={b.n}" for b in rows], fontsize=8)
    cv.set_xlabel("context length (prompt tokens); n: requests")
    return _save(fig, path)


def accuracy_vs_throughput(rows: Sequence[ModelRow], path: Path) -> Path | None:
    points = [
        (r.decode_tps_mean, acc, f"{r.model} {task}")
        for r in rows
        if r.accuracy and r.decode_tps_mean
        for task, acc in r.accuracy.items()
    ]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for tps, acc, label in points:
        ax.scatter(tps, acc * 100)
        ax.annotate(label, (tps, acc * 100), fontsize=7)
    ax.set_xlabel("decode tok/s")
    ax.set_ylabel("accuracy %")
    return _save(fig, path)


def slo_vs_load(summary: RunSummary, path: Path) -> Path | None:
    """SLO attainment (with its Wilson 95 % interval) and goodput against the load of each
    stage (runs of several stages)."""
    points: list[tuple[float, Proportion, float | None]]
    if summary.search is not None and summary.search.steps:
        steps = sorted(summary.search.steps, key=lambda s: s.rate)
        points = [
            (
                s.rate,
                wilson(round((s.attainment or 0.0) * s.requests), s.requests),
                s.goodput_rps,
            )
            for s in steps
        ]
        xlabel = "offered rate (sessions/s; requests/s for one-request sessions)"
    elif summary.slo is not None and len(summary.slo.stages) > 1:
        stages = sorted(
            (s for s in summary.slo.stages if s.request_rate is not None),
            key=lambda s: s.request_rate or 0.0,
        )
        points = [(s.request_rate or 0.0, wilson(s.met, s.counted), s.goodput_rps) for s in stages]
        xlabel = "measured load (requests/s of the stage)"
    else:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = [p[0] for p in points]
    value = np.array([p[1].value * 100 if p[1].value is not None else np.nan for p in points])
    low = np.array([p[1].low * 100 if p[1].low is not None else np.nan for p in points])
    high = np.array([p[1].high * 100 if p[1].high is not None else np.nan for p in points])
    ax.errorbar(x, value, yerr=[value - low, high - value], fmt="o-", capsize=3,
                color="tab:blue", label="attainment % (Wilson 95 %)")  # fmt: skip
    if summary.search is not None:
        ax.axhline(summary.search.target * 100, color="tab:blue", ls=":", lw=1)
    ax.set_ylim(0, 102)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("SLO attainment %", color="tab:blue")
    good = ax.twinx()
    good.plot(x, [p[2] if p[2] is not None else np.nan for p in points], "s--",
              color="tab:green")  # fmt: skip
    good.set_ylabel("goodput requests/s", color="tab:green")
    return _save(fig, path)


def all_plots(
    records: Sequence[RequestRecord],
    samples: Sequence[ResourceSample],
    summary: RunSummary,
    out: Path,
) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    made = [
        throughput_per_model(summary.table, out / "throughput.png"),
        latency_cdf(records, out / "latency_cdf.png"),
        resource_timeline(samples, out / "resources.png"),
        cv_vs_context(summary, out / "cv_context.png"),
    ]
    acc = accuracy_vs_throughput(summary.table, out / "accuracy_throughput.png")
    slo = slo_vs_load(summary, out / "slo_load.png")
    return made + [p for p in (acc, slo) if p is not None]


def cost_vs_rate(cost: CostAnalysis, path: Path) -> Path:
    """USD per million tokens against the request rate: the edge alone (up to its capacity at
    the SLO), the cloud alone, and the edge with spill-over beyond its capacity."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    low = min(p.rate_rps for p in cost.points)
    high = max(p.rate_rps for p in cost.points)
    rates = np.geomspace(low, high, 200)
    curve = np.array([cost.at(float(r)).spill_usd_per_mtok for r in rates])
    inside = rates <= cost.capacity_rps
    ax.plot(rates[inside], curve[inside], color="tab:green", label="edge alone")
    ax.plot(rates[~inside], curve[~inside], color="tab:olive", ls="--",
            label="edge + spill to cloud")  # fmt: skip
    if (~inside).any():
        # where the edge alone would cost, had it the capacity: the crossover lies on it
        unbounded = cost.model_copy(update={"capacity_rps": float("inf")})
        alone = [unbounded.at(float(r)).spill_usd_per_mtok for r in rates[~inside]]
        ax.plot(rates[~inside], alone, color="tab:green", ls=":", lw=1,
                label="edge alone past capacity (misses SLO)")  # fmt: skip
    ax.axhline(cost.cloud_usd_per_mtok, color="tab:blue", label="cloud alone")
    ax.axvline(cost.capacity_rps, color="tab:red", ls=":", lw=1, label="edge capacity at SLO")
    if cost.crossover_rps is not None and low <= cost.crossover_rps <= high:
        ax.axvline(cost.crossover_rps, color="grey", ls=":", lw=1, label="crossover")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("request rate (requests/s)")
    ax.set_ylabel("USD per million tokens")
    ax.legend(fontsize=7)
    return _save(fig, path)
