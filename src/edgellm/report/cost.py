"""Edge or cloud: cost per million tokens of an edge cluster against a cloud API, across rates.

Inputs measured by a run:
- **capacity**: the requests per second one device sustains within the SLO: the capacity
  search's highest passing rate (sessions/s) times the requests per session of that step;
- **dynamic energy per request**: the power model's energy above idle, integrated over the
  sampling intervals with a request in flight (warm-ups included: they did the same work),
  divided by the requests of those intervals;
- **tokens per request**: mean prompt and completion tokens of the measured requests.

Inputs configured (`CostConfig`, defaults and their sources in docs/paper-reproduction.md):
device price and lifetime, electricity price, the number of devices, the share of the time
the cluster serves traffic, and the cloud's price per million input and output tokens.

The model, per hour of wall time with the cluster serving `rate` requests/s for a share `u`
of it:
- fixed cost F = devices x (price / lifetime hours + idle watts x electricity price): the
  hardware is paid for and powered whether it serves or not;
- edge variable cost per request v = dynamic joules x electricity price;
- cloud cost per request c = input tokens x input price + output tokens x output price;
- edge alone, up to the cluster's capacity K = devices x capacity:
  (F + u x rate x 3600 x v) / (u x rate x 3600 x tokens per request);
- beyond K the edge alone misses the SLO; with the gateway's spill-over the edge serves K and
  the cloud the rest;
- crossover: the rate where edge and cloud cost the same per token,
  F / (u x 3600 x (c - v)); none when the edge's energy alone costs more than the cloud.
Capacity scales with the number of devices (the gateway balances load, no shared bottleneck):
an assumption, not a measurement.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from edgellm.bench.devices import DeviceProfile
from edgellm.bench.records import RequestRecord, ResourceSample
from edgellm.bench.search import SearchResult

HOURS_PER_YEAR = 365.25 * 24
JOULES_PER_KWH = 3.6e6
RATE_FRACTIONS = (0.02, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0)
"""Rates of the table, as fractions of the cluster's capacity."""


class CostError(ValueError):
    pass


class CostConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    devices: int = Field(1, ge=1, description="edge devices, each with the measured capacity")
    device_price_usd: float | None = Field(
        None, ge=0, description="per device; default: the power profile's price"
    )
    lifetime_years: float | None = Field(
        None, gt=0, description="amortisation period; default: the power profile's"
    )
    electricity_usd_per_kwh: float = Field(0.30, ge=0)
    utilisation: float = Field(
        1.0, gt=0, le=1, description="share of the time the cluster serves traffic at the rate"
    )
    cloud_input_usd_per_mtok: float = Field(0.15, ge=0)
    cloud_output_usd_per_mtok: float = Field(0.60, ge=0)
    cloud_name: str = "gpt-4o-mini list price"


class CostInputs(BaseModel):
    """What the run measured (or the user gave, for `capacity_source`)."""

    device: str
    capacity_rps: float = Field(gt=0, description="one device, within the SLO")
    capacity_source: str
    dynamic_joules_per_request: float = Field(ge=0)
    input_tokens_per_request: float = Field(ge=0)
    output_tokens_per_request: float = Field(ge=0)


class CostPoint(BaseModel):
    rate_rps: float
    edge_meets_slo: bool
    """The edge alone serves this rate within the SLO (rate <= the cluster's capacity)."""
    edge_usd_per_mtok: float | None
    """Edge alone; None beyond its capacity (it would miss the SLO)."""
    cloud_usd_per_mtok: float
    spill_usd_per_mtok: float
    """Edge up to its capacity, the rest spilled to the cloud."""
    cloud_share: float
    """Share of the requests the cloud serves with spill-over."""


class CostAnalysis(BaseModel):
    config: CostConfig
    inputs: CostInputs
    device_price_usd: float
    lifetime_years: float
    idle_watts: float
    fixed_usd_per_hour: float
    edge_energy_usd_per_mtok: float
    """The edge's variable cost: dynamic energy only."""
    cloud_usd_per_mtok: float
    capacity_rps: float
    """The cluster's: devices x one device's capacity."""
    crossover_rps: float | None
    """Above this rate the edge is cheaper per token; None: never (its energy costs more)."""
    edge_cheaper_within_slo: bool
    """The crossover lies within the cluster's capacity."""
    points: list[CostPoint]

    def at(self, rate: float) -> CostPoint:
        """The costs at `rate` requests/s (> 0): the edge serves up to its capacity, the cloud
        the rest; per hour of wall time, of which the cluster serves a share `utilisation`."""
        tokens = self.inputs.input_tokens_per_request + self.inputs.output_tokens_per_request
        edge_request = self.edge_energy_usd_per_mtok * tokens / 1e6
        cloud_request = self.cloud_usd_per_mtok * tokens / 1e6
        served_s = self.config.utilisation * 3600  # seconds of service per hour of wall time
        edge_rate = min(rate, self.capacity_rps)
        per_hour = self.fixed_usd_per_hour + served_s * (
            edge_rate * edge_request + (rate - edge_rate) * cloud_request
        )
        per_mtok = per_hour / (served_s * rate * tokens) * 1e6
        meets = rate <= self.capacity_rps * (1 + 1e-12)
        return CostPoint(
            rate_rps=rate,
            edge_meets_slo=meets,
            edge_usd_per_mtok=per_mtok if meets else None,
            cloud_usd_per_mtok=self.cloud_usd_per_mtok,
            spill_usd_per_mtok=per_mtok,
            cloud_share=(rate - edge_rate) / rate,
        )


def dynamic_energy(
    records: Sequence[RequestRecord], samples: Sequence[ResourceSample], device: DeviceProfile
) -> tuple[float, int]:
    """Joules above idle over the sampling intervals with a request in flight, and the number
    of requests in flight during them (cancelled ones left out)."""
    windows = [
        (r.request_id, r.start_s, r.start_s + r.e2e_s)
        for r in records
        if r.e2e_s is not None and not r.cancelled
    ]
    joules = 0.0
    seen: set[int] = set()
    for before, after in itertools.pairwise(sorted(samples, key=lambda s: s.t_s)):
        dt = after.t_s - before.t_s
        active = {i for i, start, end in windows if start < after.t_s and end > before.t_s}
        if dt <= 0 or not active:
            continue
        joules += (device.power_watts(after.cpu_percent) - device.idle_watts) * dt
        seen |= active
    return joules, len(seen)


def search_capacity(records: Sequence[RequestRecord], search: SearchResult) -> float | None:
    """Requests/s at the search's capacity: its rate (sessions/s) x requests per session of
    that step (1 for single-request sessions; fewer than the turns when the step's request
    budget cut conversations short)."""
    if search.capacity_rate is None:
        return None
    step = next((s for s in search.steps if s.passed and s.rate == search.capacity_rate), None)
    if step is None:
        return None
    inside = [r for r in records if r.stage == step.stage and not r.warmup and not r.cancelled]
    sessions = {r.conversation_id for r in inside}
    if not sessions:
        return None
    return search.capacity_rate * len(inside) / len(sessions)


def measure_inputs(
    parts: Sequence[tuple[Sequence[RequestRecord], Sequence[ResourceSample], SearchResult | None]],
    device: DeviceProfile,
    capacity_rps: float | None = None,
) -> CostInputs:
    """Cost inputs from a run's parts (one, or one per repeat): `capacity_rps` overrides the
    capacity search's (a run without one needs it)."""
    joules, requests = 0.0, 0
    capacities: list[float] = []
    ok: list[RequestRecord] = []
    for records, samples, search in parts:
        j, n = dynamic_energy(records, samples, device)
        joules, requests = joules + j, requests + n
        if search is not None and (c := search_capacity(records, search)) is not None:
            capacities.append(c)
        ok += [r for r in records if r.ok and not r.warmup and not r.cancelled]
    if capacity_rps is not None:
        capacity, source = capacity_rps, "given (--cost capacity=...)"
    elif capacities:
        capacity = sum(capacities) / len(capacities)
        source = "capacity search" + (
            f" (mean of {len(capacities)} repeats)" if len(capacities) > 1 else ""
        )
    else:
        raise CostError(
            "the run has no capacity at an SLO (run it with --load search --slo ...), "
            "or give one: --cost capacity=REQUESTS_PER_S"
        )
    prompts = [r.prompt_tokens for r in ok if r.prompt_tokens is not None]
    completions = [r.completion_tokens for r in ok if r.completion_tokens is not None]
    if not prompts or not completions:
        raise CostError("the run has no successful measured request with token counts")
    if requests == 0:
        raise CostError("the run has no resource samples while requests ran (no energy figure)")
    return CostInputs(
        device=device.name,
        capacity_rps=capacity,
        capacity_source=source,
        dynamic_joules_per_request=max(0.0, joules) / requests,
        input_tokens_per_request=sum(prompts) / len(prompts),
        output_tokens_per_request=sum(completions) / len(completions),
    )


def analyse(inputs: CostInputs, device: DeviceProfile, config: CostConfig) -> CostAnalysis:
    """The cost model of the module docstring, at `RATE_FRACTIONS` of the cluster's capacity
    and at the crossover."""
    price = config.device_price_usd if config.device_price_usd is not None else device.price_usd
    years = config.lifetime_years if config.lifetime_years is not None else device.lifetime_years
    tokens = inputs.input_tokens_per_request + inputs.output_tokens_per_request
    if tokens <= 0:
        raise CostError("requests of zero tokens: no cost per token")
    kwh = config.electricity_usd_per_kwh
    fixed = config.devices * (price / (years * HOURS_PER_YEAR) + device.idle_watts / 1000 * kwh)
    edge_per_request = inputs.dynamic_joules_per_request / JOULES_PER_KWH * kwh
    cloud_per_request = (
        inputs.input_tokens_per_request * config.cloud_input_usd_per_mtok
        + inputs.output_tokens_per_request * config.cloud_output_usd_per_mtok
    ) / 1e6
    capacity = config.devices * inputs.capacity_rps
    crossover = (
        fixed / (config.utilisation * 3600 * (cloud_per_request - edge_per_request))
        if cloud_per_request > edge_per_request
        else None
    )
    analysis = CostAnalysis(
        config=config,
        inputs=inputs,
        device_price_usd=price,
        lifetime_years=years,
        idle_watts=device.idle_watts,
        fixed_usd_per_hour=fixed,
        edge_energy_usd_per_mtok=edge_per_request / tokens * 1e6,
        cloud_usd_per_mtok=cloud_per_request / tokens * 1e6,
        capacity_rps=capacity,
        crossover_rps=crossover,
        edge_cheaper_within_slo=crossover is not None and crossover <= capacity,
        points=[],
    )
    rates = {capacity * f for f in RATE_FRACTIONS}
    if crossover is not None and math.isfinite(crossover):
        rates.add(crossover)
    analysis.points = [analysis.at(rate) for rate in sorted(rates)]
    return analysis


def parse_overrides(text: str) -> dict[str, float | int | str]:
    """`"devices=4,cloud_output_usd_per_mtok=0.6,capacity=0.3"` → typed values (validated by
    `CostConfig`; `capacity` is the one key outside it)."""
    values: dict[str, float | int | str] = {}
    known = {*CostConfig.model_fields, "capacity"}
    for part in text.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in known:
            raise CostError(f"'{part.strip()}': expected KEY=VALUE with KEY one of {sorted(known)}")
        value = value.strip()
        if key == "cloud_name":
            values[key] = value
            continue
        try:
            values[key] = int(value) if key == "devices" else float(value)
        except ValueError as exc:
            raise CostError(f"{key}: '{value}' is not a number") from exc
    return values
