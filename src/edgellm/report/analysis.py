"""Numbers computed from a run's raw records and samples (nothing here reads a summary back)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel

from edgellm.bench.records import RequestRecord, ResourceSample

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
    joules_per_token: float | None = None
    accuracy: dict[str, float] | None = None


def measured(records: Sequence[RequestRecord]) -> list[RequestRecord]:
    return [r for r in records if not r.warmup]


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


def summarize(
    records: Sequence[RequestRecord],
    samples: Sequence[ResourceSample],
    accuracy: dict[str, dict[str, float]] | None = None,
    energy: dict[str, Any] | None = None,
) -> RunSummary:
    ok = [r for r in measured(records) if r.ok]
    return RunSummary(
        table=model_rows(records, samples, accuracy),
        ttft_s=distribution([r.ttft_s for r in ok]),
        latency_s=distribution([r.e2e_s for r in ok]),
        itl_ms=distribution([g * 1e3 for r in ok for g in r.itl_s]),
        decode_tps=distribution([decode_tps(r) for r in ok]),
        prefill_tps=distribution([prefill_tps(r) for r in ok]),
        cv_by_context=cv_by_context(ok),
        server_timings_source=sorted({r.server.source for r in ok if r.server}),
        energy=energy,
    )
