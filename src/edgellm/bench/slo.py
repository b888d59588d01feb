"""Service-level objectives per request, their attainment and goodput.

`--slo ttft=2s,itl=200ms,tpot=50ms,e2e=60s` (any subset). Each measured request is:
- `cancelled` when the benchmark itself stopped it (Ctrl-C, a stage ending): left out of every
  SLO figure, as GuideLLM does, since the server was not given the chance to finish it;
- `errored` when it failed (HTTP error, transport error, a stream cut short by the server):
  counted as a miss of every constraint;
- `met` when every constraint holds, else `missed`.

Constraints (all upper bounds, in seconds):
- `ttft`: time to the first content chunk;
- `itl`: the request's largest gap between content chunks (every gap must be within the bound);
- `tpot`: time per output token after the first, as vLLM defines it:
  (e2e - ttft) / (completion_tokens - 1); a request of one token has none and meets it;
- `e2e`: send to the end of the stream.

Goodput: requests, and output tokens, per second of the stage's wall time (first send to last
end) of the requests that met every constraint.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel

from edgellm.bench.records import RequestRecord

SLO_KEYS = ("ttft", "itl", "tpot", "e2e")
_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "min": 60.0}
_VALUE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(min|ms|us|s)\s*$")

Outcome = Literal["met", "missed", "errored", "cancelled"]


class SloError(ValueError):
    pass


def parse_slo(text: str) -> dict[str, float]:
    """`"ttft=2s,itl=200ms"` → `{"ttft": 2.0, "itl": 0.2}` (seconds). Units are required."""
    limits: dict[str, float] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep:
            raise SloError(f"'{part.strip()}': expected KEY=VALUE, e.g. ttft=2s")
        if key not in SLO_KEYS:
            raise SloError(f"unknown SLO '{key}'; choose from {', '.join(SLO_KEYS)}")
        if key in limits:
            raise SloError(f"SLO '{key}' given twice")
        match = _VALUE.match(value)
        if match is None:
            raise SloError(
                f"{key}: '{value.strip()}' is not a duration with a unit "
                f"({', '.join(_UNITS)}), e.g. {key}=200ms"
            )
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
        if seconds <= 0:
            raise SloError(f"{key}: the bound must be positive")
        limits[key] = seconds
    if not limits:
        raise SloError("no SLO given, e.g. --slo ttft=2s,e2e=60s")
    return limits


def format_slo(limits: dict[str, float]) -> str:
    return ",".join(f"{k}={v * 1e3:g}ms" if v < 1 else f"{k}={v:g}s" for k, v in limits.items())


def tpot_s(r: RequestRecord) -> float | None:
    """vLLM's TPOT; None when it is not defined (a failed request, or one output token)."""
    if r.e2e_s is None or r.ttft_s is None or not r.completion_tokens:
        return None
    if r.completion_tokens <= 1:
        return None
    return (r.e2e_s - r.ttft_s) / (r.completion_tokens - 1)


def constraint_met(r: RequestRecord, key: str, limit: float) -> bool:
    """One constraint of a request that finished without error."""
    if key == "ttft":
        return r.ttft_s is not None and r.ttft_s <= limit
    if key == "e2e":
        return r.e2e_s is not None and r.e2e_s <= limit
    if key == "itl":
        return max(r.itl_s, default=0.0) <= limit
    if key == "tpot":
        value = tpot_s(r)
        return value is None or value <= limit
    raise SloError(f"unknown SLO '{key}'")


def outcome(r: RequestRecord, limits: dict[str, float]) -> Outcome:
    if r.cancelled:
        return "cancelled"
    if not r.ok:
        return "errored"
    return "met" if all(constraint_met(r, k, v) for k, v in limits.items()) else "missed"


class SloResult(BaseModel):
    """SLO figures of one group of requests (a stage, or the whole run)."""

    stage: str
    counted: int
    """Requests counted: met + missed + errored (cancelled ones are left out)."""
    met: int
    missed: int
    errored: int
    cancelled: int
    attainment: float | None
    """Fraction of counted requests that met every constraint."""
    per_constraint: dict[str, float | None]
    """Fraction of counted requests within each bound (an errored request is outside all)."""
    duration_s: float | None
    request_rate: float | None
    """Counted requests per second of the stage (the load it actually got)."""
    goodput_rps: float | None
    goodput_tps: float | None
    """Output tokens per second of the requests that met every constraint."""


def window_s(records: Sequence[RequestRecord]) -> float | None:
    """First send to last end of `records`."""
    if not records:
        return None
    start = min(r.start_s for r in records)
    end = max(r.start_s + (r.e2e_s or 0.0) for r in records)
    return end - start if end > start else None


def evaluate(records: Sequence[RequestRecord], limits: dict[str, float], stage: str) -> SloResult:
    outcomes = [(r, outcome(r, limits)) for r in records]
    counted = [(r, o) for r, o in outcomes if o != "cancelled"]
    met = [r for r, o in counted if o == "met"]
    n = len(counted)
    per: dict[str, float | None] = {}
    for key, limit in limits.items():
        inside = sum(1 for r, o in counted if o != "errored" and constraint_met(r, key, limit))
        per[key] = inside / n if n else None
    duration = window_s([r for r, _ in counted])
    return SloResult(
        stage=stage,
        counted=n,
        met=len(met),
        missed=sum(1 for _, o in counted if o == "missed"),
        errored=sum(1 for _, o in counted if o == "errored"),
        cancelled=len(outcomes) - n,
        attainment=len(met) / n if n else None,
        per_constraint=per,
        duration_s=duration,
        request_rate=n / duration if duration else None,
        goodput_rps=len(met) / duration if duration else None,
        goodput_tps=sum(r.completion_tokens or 0 for r in met) / duration if duration else None,
    )


class SloSummary(BaseModel):
    limits: dict[str, float]
    """Bounds in seconds."""
    overall: SloResult
    stages: list[SloResult]


def slo_summary(records: Sequence[RequestRecord], limits: dict[str, float]) -> SloSummary:
    """Overall (all measured requests) and per stage, in the order stages first appear."""
    measured = [r for r in records if not r.warmup]
    stages: list[str] = []
    for r in measured:
        if r.stage not in stages:
            stages.append(r.stage)
    return SloSummary(
        limits=limits,
        overall=evaluate(measured, limits, "all"),
        stages=[evaluate([r for r in measured if r.stage == s], limits, s) for s in stages],
    )
