"""Numbers computed from a run's raw records and samples (nothing here reads a summary back)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel

from edgellm.bench.records import RequestRecord, ResourceSample
from edgellm.bench.search import SearchResult
from edgellm.bench.slo import SloSummary, evaluate, slo_summary
from edgellm.bench.stats import MeanCI, Proportion, mean_ci, wilson

PERCENTILES = (50, 90, 95, 99)
CONTEXT_BUCKETS = (0, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


class Distribution(BaseModel):
    n: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None


def distribution(values: Sequence[float | None]) -> Distribution:
    data = np.array([v for v in values if v is not None], dtype=float)
    if data.size == 0:
        return Distribution(
            n=0, mean=None, std=None, min=None, max=None, p50=None, p90=None, p95=None, p99=None
        )
    pct = np.percentile(data, PERCENTILES)
    return Distribution(
        n=int(data.size),
        mean=float(data.mean()),
        std=float(data.std(ddof=1)) if data.size > 1 else 0.0,
        min=float(data.min()),
        max=float(data.max()),
        p50=float(pct[0]),
        p90=float(pct[1]),
        p95=float(pct[2]),
        p99=float(pct[3]),
    )


def cv(values: Sequence[float]) -> float | None:
    """Coefficient of variation (sample std / mean); None below two values."""
    if len(values) < 2:
        return None
    data = np.array(values, dtype=float)
    mean = float(data.mean())
    return float(data.std(ddof=1) / mean) if mean else None


def prefill_tps(r: RequestRecord) -> float | None:
    """Server-reported when available (it excludes HTTP and queueing), else the client's."""
    return r.server_prefill_tps if r.server_prefill_tps is not None else r.client_prefill_tps


def decode_tps(r: RequestRecord) -> float | None:
    return r.server_decode_tps if r.server_decode_tps is not None else r.client_decode_tps


class BucketCV(BaseModel):
    context_low: int
    context_high: int
    n: int
    prefill_tps_mean: float | None
    prefill_cv: float | None
    decode_tps_mean: float | None
    decode_cv: float | None


def cv_by_context(records: Sequence[RequestRecord]) -> list[BucketCV]:
    rows = []
    for low, high in itertools.pairwise(CONTEXT_BUCKETS):
        inside = [
            r for r in records if r.prompt_tokens is not None and low <= r.prompt_tokens < high
        ]
        if not inside:
            continue
        pre = [v for r in inside if (v := prefill_tps(r)) is not None]
        dec = [v for r in inside if (v := decode_tps(r)) is not None]
        rows.append(
            BucketCV(
                context_low=low,
                context_high=high,
                n=len(inside),
                prefill_tps_mean=float(np.mean(pre)) if pre else None,
                prefill_cv=cv(pre),
                decode_tps_mean=float(np.mean(dec)) if dec else None,
                decode_cv=cv(dec),
            )
        )
    return rows


class ModelRow(BaseModel):
    """One line of the paper-style table."""

    model: str
    stage: str
    requests: int
    errors: int
    generation_tps: float | None
    """Completion tokens of all requests / wall time from first send to last end."""
    decode_tps_mean: float | None
    prefill_tps_mean: float | None
    ttft_s_mean: float | None
    ttft_s_p50: float | None
    ttft_s_p99: float | None
    latency_s_mean: float | None
    latency_s_p50: float | None
    latency_s_p99: float | None
    itl_ms_p50: float | None
    prompt_tokens_mean: float | None
    completion_tokens_total: int
    memory_gb_peak: float | None
    memory_gb_mean: float | None
    cpu_percent_mean: float | None
    """While at least one request was in flight."""
    resource_samples: int = 0
    """Resource samples taken while at least one request was in flight."""
    joules_per_token: float | None = None
    accuracy: dict[str, float] | None = None


def measured(records: Sequence[RequestRecord]) -> list[RequestRecord]:
    """Requests that count: not warm-up, not cancelled by the benchmark itself."""
    return [r for r in records if not r.warmup and not r.cancelled]


def model_rows(
    records: Sequence[RequestRecord],
    samples: Sequence[ResourceSample],
    accuracy: dict[str, dict[str, float]] | None = None,
) -> list[ModelRow]:
    rows = []
    keys = sorted({(r.model, r.stage) for r in measured(records)})
    for model, stage in keys:
        group = [r for r in measured(records) if r.model == model and r.stage == stage]
        ok = [r for r in group if r.ok]
        tokens = sum(r.completion_tokens or 0 for r in ok)
        start = min((r.start_s for r in group), default=0.0)
        end = max((r.start_s + (r.e2e_s or 0.0) for r in group), default=0.0)
        window = [s for s in samples if start <= s.t_s <= end]
        busy = [s.cpu_percent for s in window if s.active_requests > 0]
        rss = [s.rss_bytes / 1e9 for s in window]
        ttft = distribution([r.ttft_s for r in ok])
        e2e = distribution([r.e2e_s for r in ok])
        itl = distribution([g * 1e3 for r in ok for g in r.itl_s])
        energy = [r.energy_j for r in ok if r.energy_j is not None]
        rows.append(
            ModelRow(
                model=model,
                stage=stage,
                requests=len(group),
                errors=len(group) - len(ok),
                generation_tps=tokens / (end - start) if end > start and tokens else None,
                decode_tps_mean=_mean([decode_tps(r) for r in ok]),
                prefill_tps_mean=_mean([prefill_tps(r) for r in ok]),
                ttft_s_mean=ttft.mean,
                ttft_s_p50=ttft.p50,
                ttft_s_p99=ttft.p99,
                latency_s_mean=e2e.mean,
                latency_s_p50=e2e.p50,
                latency_s_p99=e2e.p99,
                itl_ms_p50=itl.p50,
                prompt_tokens_mean=_mean([r.prompt_tokens for r in ok]),
                completion_tokens_total=tokens,
                memory_gb_peak=max(rss) if rss else None,
                memory_gb_mean=_mean(rss),
                cpu_percent_mean=_mean(busy),
                resource_samples=len(busy),
                joules_per_token=sum(energy) / tokens if energy and tokens else None,
                accuracy=(accuracy or {}).get(model),
            )
        )
    return rows


def _mean(values: Sequence[float | int | None]) -> float | None:
    data = [float(v) for v in values if v is not None]
    return float(np.mean(data)) if data else None


class RunSummary(BaseModel):
    table: list[ModelRow]
    ttft_s: Distribution
    latency_s: Distribution
    itl_ms: Distribution
    decode_tps: Distribution
    prefill_tps: Distribution
    cv_by_context: list[BucketCV]
    server_timings_source: list[str]
    energy: dict[str, Any] | None = None
    slo: SloSummary | None = None
    search: SearchResult | None = None
    slo_intervals: dict[str, Proportion] = {}
    """Wilson 95 % intervals of the SLO attainments: "STAGE" (every bound) and "STAGE:KEY"
    (one bound), for each stage and "all"."""
    warnings: list[str] = []
    repeats: RepeatSummary | None = None


REPEATED_FIELDS = tuple(
    name
    for name, info in ModelRow.model_fields.items()
    if info.annotation in (float | None, int)
    and name not in ("requests", "errors", "completion_tokens_total", "resource_samples")
)
"""ModelRow figures given as mean and interval across repeats."""


class RepeatedRow(BaseModel):
    model: str
    stage: str
    figures: dict[str, MeanCI]


class RepeatSummary(BaseModel):
    """Every headline figure as mean and Student-t 95 % interval across `n` repeated runs."""

    n: int
    rows: list[RepeatedRow]
    slo: dict[str, MeanCI] = {}
    """Overall attainment, per-constraint attainment, goodput (requests/s, tokens/s)."""
    capacity_rate: MeanCI | None = None
    """`--load search`: the capacity each repeat found."""


MIN_BUSY_SAMPLES = 5
"""Fewer resource samples than this while requests ran make CPU % and memory anecdotal: one
sample of a one-second run can land in a gap between requests."""


def resource_warnings(rows: Sequence[ModelRow], interval_s: float | None) -> list[str]:
    warnings = []
    for row in rows:
        if row.requests - row.errors > 0 and row.resource_samples < MIN_BUSY_SAMPLES:
            every = f" every {interval_s:g} s" if interval_s else ""
            warnings.append(
                f"{row.model} {row.stage}: only {row.resource_samples} resource sample(s){every} "
                "while requests were in flight, too few for its CPU % and memory figures; "
                "run longer or lower --sample-interval"
            )
    return warnings


def summarize(
    records: Sequence[RequestRecord],
    samples: Sequence[ResourceSample],
    accuracy: dict[str, dict[str, float]] | None = None,
    energy: dict[str, Any] | None = None,
    *,
    slo: dict[str, float] | None = None,
    search: SearchResult | None = None,
    sample_interval_s: float | None = None,
) -> RunSummary:
    ok = [r for r in measured(records) if r.ok]
    table = model_rows(records, samples, accuracy)
    if search is not None and slo:
        search = _recomputed(records, search, slo)
    slo_figures = slo_summary(records, slo) if slo else None
    return RunSummary(
        table=table,
        ttft_s=distribution([r.ttft_s for r in ok]),
        latency_s=distribution([r.e2e_s for r in ok]),
        itl_ms=distribution([g * 1e3 for r in ok for g in r.itl_s]),
        decode_tps=distribution([decode_tps(r) for r in ok]),
        prefill_tps=distribution([prefill_tps(r) for r in ok]),
        cv_by_context=cv_by_context(ok),
        server_timings_source=sorted({r.server.source for r in ok if r.server}),
        energy=energy,
        slo=slo_figures,
        search=search,
        slo_intervals=attainment_intervals(slo_figures) if slo_figures else {},
        warnings=resource_warnings(table, sample_interval_s),
    )


def attainment_intervals(slo: SloSummary) -> dict[str, Proportion]:
    """Wilson intervals of every attainment of `slo` (keys as in `RunSummary.slo_intervals`)."""
    intervals = {}
    for result in [*slo.stages, slo.overall]:
        intervals[result.stage] = wilson(result.met, result.counted)
        for key, fraction in result.per_constraint.items():
            if fraction is not None:
                inside = round(fraction * result.counted)
                intervals[f"{result.stage}:{key}"] = wilson(inside, result.counted)
    return intervals


def _recomputed(
    records: Sequence[RequestRecord], search: SearchResult, slo: dict[str, float]
) -> SearchResult:
    """The search's steps with attainment and goodput recomputed from the records (the search
    file supplies the rates and stage names; the verdicts must agree with the records)."""
    steps = []
    for step in search.steps:
        result = evaluate([r for r in measured(records) if r.stage == step.stage], slo, step.stage)
        steps.append(
            step.model_copy(
                update={
                    "attainment": result.attainment,
                    "goodput_rps": result.goodput_rps,
                    "goodput_tps": result.goodput_tps,
                    "requests": result.counted,
                }
            )
        )
    return search.model_copy(update={"steps": steps})


def repeat_values(summaries: Sequence[RunSummary]) -> dict[tuple[str, str, str], list[float]]:
    """{(model, stage, figure): one value per run} for the table's figures and the SLO ones
    (stage "all" for the run-level SLO figures)."""
    values: dict[tuple[str, str, str], list[float]] = {}
    for summary in summaries:
        for row in summary.table:
            for name in REPEATED_FIELDS:
                value = getattr(row, name)
                if value is not None:
                    values.setdefault((row.model, row.stage, name), []).append(float(value))
        if summary.slo is not None:
            model = summary.table[0].model if summary.table else ""
            overall = summary.slo.overall
            figures: dict[str, float | None] = {
                "attainment": overall.attainment,
                "goodput_rps": overall.goodput_rps,
                "goodput_tps": overall.goodput_tps,
            }
            figures |= {f"attainment_{k}": v for k, v in overall.per_constraint.items()}
            for name, value in figures.items():
                if value is not None:
                    values.setdefault((model, "all", name), []).append(value)
        if summary.search is not None and summary.search.capacity_rate is not None:
            model = summary.table[0].model if summary.table else ""
            values.setdefault((model, "all", "capacity_rate"), []).append(
                summary.search.capacity_rate
            )
    return values


def summarize_repeats(
    runs: Sequence[tuple[Sequence[RequestRecord], RunSummary]],
    slo: dict[str, float] | None,
    accuracy: dict[str, dict[str, float]] | None = None,
) -> RunSummary:
    """The runs' requests pooled (distributions, CV, SLO counts) and, in `repeats`, every
    figure's mean and interval across the runs; the table holds the means."""
    records = [r for recs, _ in runs for r in recs]
    summaries = [s for _, s in runs]
    pooled = summarize(records, [], accuracy, slo=slo)
    values = repeat_values(summaries)
    rows = []
    table = []
    for row in pooled.table:
        figures = {
            name: mean_ci(values[(row.model, row.stage, name)])
            for name in REPEATED_FIELDS
            if (row.model, row.stage, name) in values
        }
        rows.append(RepeatedRow(model=row.model, stage=row.stage, figures=figures))
        table.append(row.model_copy(update={k: ci.mean for k, ci in figures.items()}))
    slo_ci = {
        name: mean_ci(v)
        for (_, stage, name), v in values.items()
        if stage == "all" and name != "capacity_rate"
    }
    capacity = [v for (_, stage, name), v in values.items() if name == "capacity_rate"]
    warnings = [w for s in summaries for w in s.warnings]
    return pooled.model_copy(
        update={
            "table": table,
            "warnings": warnings,
            "repeats": RepeatSummary(
                n=len(runs),
                rows=rows,
                slo=slo_ci,
                capacity_rate=mean_ci(capacity[0]) if capacity else None,
            ),
        }
    )


RunSummary.model_rebuild()
