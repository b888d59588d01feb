"""Capacity search: the highest request rate whose SLO attainment stays at or above a target.

Bounded bisection over rates. From the starting rate, the rate doubles while steps pass (or
halves while they fail) until one passing and one failing rate bracket the capacity; then the
bracket is halved until it is no wider than the precision (relative to the passing end, 10 % by
default, or absolute, in the rate's unit), or the step budget is spent. Each step is a short
measured stage; the answer is the highest passing rate, with the bracket it is known to within.
Attainment is not strictly monotonic in the rate on a noisy host; the search assumes it is, as
vLLM's and GuideLLM's rate sweeps do, and reports every step so that a non-monotonic walk is
visible.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal

from pydantic import BaseModel, Field

MIN_RATE = 1e-3
"""Below this (one request in ~17 minutes) the search gives up: nothing meets the SLO."""


class SearchSettings(BaseModel):
    target: float = Field(0.95, gt=0, le=1, description="SLO attainment to keep")
    precision: float = Field(0.1, gt=0, description="bracket width that ends the search")
    # Relative by default: an absolute width suits one scale only (0.1/s is a factor of two
    # around a Raspberry Pi's 0.05-0.1 conversations/s, and nothing around a GPU's 50 req/s).
    relative: bool = Field(True, description="precision is a fraction of the passing rate")
    max_steps: int = Field(8, ge=1)
    requests: int = Field(20, ge=1, description="requests per step")
    duration_s: float | None = Field(None, gt=0, description="time bound per step")
    arrivals: Literal["constant", "poisson"] = "constant"


class StepMeasure(BaseModel):
    attainment: float | None
    goodput_rps: float | None = None
    goodput_tps: float | None = None
    requests: int = 0


class SearchStep(BaseModel):
    step: int
    stage: str
    rate: float
    passed: bool
    attainment: float | None
    goodput_rps: float | None
    goodput_tps: float | None
    requests: int


class SearchResult(BaseModel):
    target: float
    precision: float
    relative: bool
    arrivals: str
    capacity_rate: float | None
    """The highest rate that passed (None: none did)."""
    lowest_failing_rate: float | None
    """The capacity lies in [capacity_rate, lowest_failing_rate)."""
    converged: bool
    reason: str
    steps: list[SearchStep]


def stage_name(step: int, rate: float) -> str:
    return f"search-{step:02d}-{rate:.4g}"


def _narrow_enough(low: float, high: float, settings: SearchSettings) -> bool:
    width = high - low
    return width <= settings.precision * (low if settings.relative else 1.0)


async def bisect_capacity(
    measure: Callable[[int, float, str], Awaitable[StepMeasure]],
    start_rate: float,
    settings: SearchSettings,
) -> SearchResult:
    """Walk rates with `measure(step, rate, stage)` and return the capacity and the walk."""
    low: float | None = None
    high: float | None = None
    rate = start_rate
    steps: list[SearchStep] = []
    reason = f"step budget ({settings.max_steps}) spent"
    converged = False
    for step in range(settings.max_steps):
        stage = stage_name(step, rate)
        m = await measure(step, rate, stage)
        passed = m.attainment is not None and m.attainment >= settings.target
        steps.append(
            SearchStep(
                step=step,
                stage=stage,
                rate=rate,
                passed=passed,
                attainment=m.attainment,
                goodput_rps=m.goodput_rps,
                goodput_tps=m.goodput_tps,
                requests=m.requests,
            )
        )
        if passed:
            low = rate if low is None else max(low, rate)
        else:
            high = rate if high is None else min(high, rate)
        if low is None:
            assert high is not None
            if high / 2 < MIN_RATE:
                reason = f"no rate down to {MIN_RATE:g}/s meets the target"
                break
            rate = high / 2
        elif high is None:
            rate = low * 2
        else:
            if _narrow_enough(low, high, settings):
                converged, reason = True, "bracket within the precision"
                break
            rate = (low + high) / 2
    return SearchResult(
        target=settings.target,
        precision=settings.precision,
        relative=settings.relative,
        arrivals=settings.arrivals,
        capacity_rate=low,
        lowest_failing_rate=high,
        converged=converged,
        reason=reason,
        steps=steps,
    )
