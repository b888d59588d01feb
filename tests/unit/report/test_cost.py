"""The edge-or-cloud cost model against figures computed by hand, and its inputs from records."""

from __future__ import annotations

import pytest

from edgellm.bench.devices import DeviceProfile
from edgellm.bench.records import RequestRecord, ResourceSample
from edgellm.bench.search import SearchResult, SearchStep
from edgellm.report.cost import (
    CostConfig,
    CostError,
    CostInputs,
    analyse,
    dynamic_energy,
    measure_inputs,
    parse_overrides,
    search_capacity,
)

# round figures: 87.66 USD over one year is 0.01 USD/h; 2 W idle at 0.5 USD/kWh is 0.001 USD/h
DEVICE = DeviceProfile(
    name="test", description="", cores=4, memory_gb=1, idle_watts=2.0, busy_watts=6.0,
    price_usd=87.66, lifetime_years=1.0,
)  # fmt: skip
CONFIG = CostConfig(
    electricity_usd_per_kwh=0.5, cloud_input_usd_per_mtok=1.0, cloud_output_usd_per_mtok=3.0
)
# 36 J is 1e-5 kWh: 5e-6 USD a request; 100 + 100 tokens cost 4e-4 USD in the cloud
INPUTS = CostInputs(
    device="test", capacity_rps=0.1, capacity_source="given", dynamic_joules_per_request=36.0,
    input_tokens_per_request=100, output_tokens_per_request=100,
)  # fmt: skip


def test_fixed_variable_and_cloud_costs_by_hand() -> None:
    a = analyse(INPUTS, DEVICE, CONFIG)
    assert a.fixed_usd_per_hour == pytest.approx(0.011)
    assert a.edge_energy_usd_per_mtok == pytest.approx(5e-6 / 200 * 1e6)  # 0.025
    assert a.cloud_usd_per_mtok == pytest.approx(2.0)
    assert a.capacity_rps == pytest.approx(0.1)
    # 0.011 / (3600 x (4e-4 - 5e-6))
    assert a.crossover_rps == pytest.approx(0.011 / 1.422)
    assert a.edge_cheaper_within_slo


def test_cost_per_million_tokens_at_capacity_and_beyond() -> None:
    at_capacity = analyse(INPUTS, DEVICE, CONFIG).points
    full = next(p for p in at_capacity if p.rate_rps == pytest.approx(0.1))
    # (0.011 + 360 x 5e-6) USD for 72,000 tokens an hour
    assert full.edge_usd_per_mtok == pytest.approx(0.0128 / 72000 * 1e6)
    assert full.spill_usd_per_mtok == full.edge_usd_per_mtok and full.cloud_share == 0.0
    assert full.edge_meets_slo
    double = next(p for p in at_capacity if p.rate_rps == pytest.approx(0.2))
    # the edge serves 0.1/s, the cloud the other 0.1/s: 0.011 + 360 x (5e-6 + 4e-4) USD an hour
    assert not double.edge_meets_slo and double.edge_usd_per_mtok is None
    assert double.spill_usd_per_mtok == pytest.approx(0.1568 / 144000 * 1e6)
    assert double.cloud_share == pytest.approx(0.5)
    assert double.cloud_usd_per_mtok == pytest.approx(2.0)
    crossing = next(p for p in at_capacity if p.rate_rps == pytest.approx(0.011 / 1.422))
    assert crossing.edge_usd_per_mtok == pytest.approx(crossing.cloud_usd_per_mtok)


def test_utilisation_and_devices_by_hand() -> None:
    half = analyse(INPUTS, DEVICE, CONFIG.model_copy(update={"utilisation": 0.5}))
    full = next(p for p in half.points if p.rate_rps == pytest.approx(0.1))
    # serving half the time: 0.011 + 1800 x 0.1 x 5e-6 USD for 36,000 tokens a wall hour
    assert full.edge_usd_per_mtok == pytest.approx(0.0119 / 36000 * 1e6)
    assert half.crossover_rps == pytest.approx(2 * 0.011 / 1.422)
    two = analyse(INPUTS, DEVICE, CONFIG.model_copy(update={"devices": 2}))
    assert two.fixed_usd_per_hour == pytest.approx(0.022) and two.capacity_rps == 0.2
    priced = CONFIG.model_copy(update={"device_price_usd": 2 * 87.66, "lifetime_years": 2.0})
    assert analyse(INPUTS, DEVICE, priced).fixed_usd_per_hour == pytest.approx(0.011)


def test_a_dearer_cloud_moves_the_crossover_down_a_cheaper_one_up() -> None:
    base = analyse(INPUTS, DEVICE, CONFIG).crossover_rps
    dear = CONFIG.model_copy(update={"cloud_output_usd_per_mtok": 6.0})
    cheap = CONFIG.model_copy(
        update={"cloud_input_usd_per_mtok": 0.05, "cloud_output_usd_per_mtok": 0.25}
    )
    assert base is not None
    assert (analyse(INPUTS, DEVICE, dear).crossover_rps or 0) < base
    cheaper = analyse(INPUTS, DEVICE, cheap)
    assert (cheaper.crossover_rps or 0) > base
    # 100 x 0.05 + 100 x 0.25 USD/M: 3e-5 USD a request; 0.011 / (3600 x 2.5e-5) > capacity 0.1
    assert cheaper.crossover_rps == pytest.approx(0.011 / 0.09)
    assert not cheaper.edge_cheaper_within_slo
    # a cloud cheaper than the edge's electricity alone: the edge never wins
    free = CONFIG.model_copy(
        update={"cloud_input_usd_per_mtok": 0.0, "cloud_output_usd_per_mtok": 0.01}
    )
    never = analyse(INPUTS, DEVICE, free)
    assert never.crossover_rps is None and not never.edge_cheaper_within_slo
    assert all(
        p.edge_usd_per_mtok is None or p.edge_usd_per_mtok > p.cloud_usd_per_mtok
        for p in never.points
    )


def _sample(t: float, cpu: float) -> ResourceSample:
    return ResourceSample(t_s=t, source="pid:1", cpu_percent=cpu, rss_bytes=1)


def _record(i: int, start: float, e2e: float, **extra: object) -> RequestRecord:
    return RequestRecord(request_id=i, model="m", start_s=start, e2e_s=e2e, **extra)


def test_dynamic_energy_counts_only_intervals_with_requests_in_flight() -> None:
    # power after each sample: 6 W (400 %), 4 W (200 %), 6 W, 6 W; idle is 2 W
    samples = [_sample(0, 0), _sample(1, 400), _sample(2, 200), _sample(3, 400), _sample(4, 400)]
    records = [
        _record(0, 0.5, 1.0, warmup=True),  # in [0, 1] and [1, 2]: its work counts
        _record(1, 2.2, 0.6),  # in [2, 3]
        _record(2, 2.4, 0.1, cancelled=True, ok=False),  # left out
    ]
    joules, requests = dynamic_energy(records, samples, DEVICE)
    assert joules == pytest.approx(4 + 2 + 4)  # [3, 4] had no request: idle, not counted
    assert requests == 2
    assert dynamic_energy(records[:1], samples[:1], DEVICE) == (0.0, 0)


def _search(capacity: float | None) -> SearchResult:
    steps = [
        SearchStep(step=0, stage="s0", rate=0.5, passed=True, attainment=1.0,
                   goodput_rps=None, goodput_tps=None, requests=6),
        SearchStep(step=1, stage="s1", rate=1.0, passed=False, attainment=0.5,
                   goodput_rps=None, goodput_tps=None, requests=4),
    ]  # fmt: skip
    return SearchResult(
        target=0.95, precision=0.1, relative=False, arrivals="constant",
        capacity_rate=capacity, lowest_failing_rate=1.0, converged=True, reason="", steps=steps,
    )  # fmt: skip


def test_capacity_is_the_passing_rate_times_requests_per_session() -> None:
    # 6 requests of 3 conversations at 0.5 sessions/s: 1 request/s
    records = [
        _record(i, i, 0.5, stage="s0", conversation_id=f"c{i % 3}", ok=True,
                prompt_tokens=10 * (i + 1), completion_tokens=5)
        for i in range(6)
    ] + [_record(9, 0, 0.5, stage="s1", conversation_id="c9")]  # fmt: skip
    assert search_capacity(records, _search(0.5)) == pytest.approx(1.0)
    assert search_capacity(records, _search(None)) is None
    samples = [_sample(t, 400) for t in range(8)]
    inputs = measure_inputs([(records, samples, _search(0.5))], DEVICE)
    assert inputs.capacity_rps == pytest.approx(1.0) and inputs.capacity_source == "capacity search"
    assert inputs.input_tokens_per_request == pytest.approx(35.0)
    assert inputs.output_tokens_per_request == pytest.approx(5.0)
    given = measure_inputs([(records, samples, None)], DEVICE, capacity_rps=0.3)
    assert given.capacity_rps == 0.3 and "given" in given.capacity_source
    with pytest.raises(CostError, match="--load search"):
        measure_inputs([(records, samples, None)], DEVICE)


def test_overrides_are_typed_and_checked() -> None:
    assert parse_overrides("devices=4, capacity=0.25,cloud_name=x") == {
        "devices": 4,
        "capacity": 0.25,
        "cloud_name": "x",
    }
    with pytest.raises(CostError, match="KEY=VALUE"):
        parse_overrides("gpus=2")
    with pytest.raises(CostError, match="not a number"):
        parse_overrides("devices=four")
