"""Capacity search: the bisection's convergence, and the whole search against a fake server
whose capacity is known (one request at a time, so above 1 / service time requests queue)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from edgellm.bench.run import BenchConfig, run_bench
from edgellm.bench.search import SearchSettings, StepMeasure, bisect_capacity
from edgellm.bench.workloads import WorkloadOptions
from tests.unit.bench.fakes import FakeBehaviour, FakeServer


def _threshold(capacity: float) -> tuple[list[float], object]:
    walked: list[float] = []

    async def measure(step: int, rate: float, stage: str) -> StepMeasure:
        walked.append(rate)
        return StepMeasure(attainment=1.0 if rate <= capacity else 0.5, requests=10)

    return walked, measure


def test_bisection_brackets_a_known_capacity_within_the_precision() -> None:
    walked, measure = _threshold(3.7)
    settings = SearchSettings(target=0.95, precision=0.1, relative=False, max_steps=20)
    result = asyncio.run(bisect_capacity(measure, 1.0, settings))  # type: ignore[arg-type]
    assert result.converged and result.reason == "bracket within the precision"
    assert result.capacity_rate is not None and result.lowest_failing_rate is not None
    assert result.capacity_rate <= 3.7 < result.lowest_failing_rate
    assert result.lowest_failing_rate - result.capacity_rate <= 0.1
    # doubling up to the first failure, then bisection
    assert walked[:4] == [1.0, 2.0, 4.0, 3.0]
    assert [s.rate for s in result.steps] == walked
    assert [s.passed for s in result.steps] == [r <= 3.7 for r in walked]


def test_relative_precision_and_halving_from_a_failing_start() -> None:
    walked, measure = _threshold(0.3)
    settings = SearchSettings(precision=0.05, relative=True, max_steps=30)
    result = asyncio.run(bisect_capacity(measure, 8.0, settings))  # type: ignore[arg-type]
    assert walked[:6] == [8.0, 4.0, 2.0, 1.0, 0.5, 0.25]
    assert result.converged and result.capacity_rate is not None
    low, high = result.capacity_rate, result.lowest_failing_rate
    assert high is not None and low <= 0.3 < high and (high - low) <= 0.05 * low


def test_the_default_precision_is_relative_so_slow_devices_get_a_narrow_bracket() -> None:
    # A Pi-class capacity of 0.07 conversations/s, from 0.05: an absolute 0.1 stops at once
    # on [0.05, 0.1), a factor of two; the default (10 % of the passing rate) narrows it.
    walked, measure = _threshold(0.07)
    result = asyncio.run(bisect_capacity(measure, 0.05, SearchSettings()))  # type: ignore[arg-type]
    low, high = result.capacity_rate, result.lowest_failing_rate
    assert result.converged and low is not None and high is not None
    assert low <= 0.07 < high and high - low <= 0.1 * low and len(walked) > 2
    _, measure = _threshold(0.07)
    absolute = SearchSettings(precision=0.1, relative=False)
    coarse = asyncio.run(bisect_capacity(measure, 0.05, absolute))  # type: ignore[arg-type]
    assert (coarse.capacity_rate, coarse.lowest_failing_rate) == (0.05, 0.1)


def test_the_step_budget_bounds_the_search() -> None:
    walked, measure = _threshold(3.7)
    settings = SearchSettings(precision=0.001, max_steps=5)
    result = asyncio.run(bisect_capacity(measure, 1.0, settings))  # type: ignore[arg-type]
    assert len(walked) == 5 and not result.converged and "budget" in result.reason
    assert result.capacity_rate is not None and result.capacity_rate <= 3.7


def test_nothing_meets_the_target() -> None:
    walked, measure = _threshold(-1.0)
    settings = SearchSettings(max_steps=50)
    result = asyncio.run(bisect_capacity(measure, 0.01, settings))  # type: ignore[arg-type]
    assert result.capacity_rate is None and "no rate" in result.reason
    assert min(walked) >= 1e-3 and len(walked) < 50


# 0.2 s to the first token + 5 more at 0.04 s: 0.4 s per request, one at a time → 2.5 req/s.
# The walk's first three rates sit well clear of that (60 % and 120 % of it), so a loaded CI
# host that adds a hundred milliseconds to every request cannot turn a pass into a fail.
SERIAL = FakeBehaviour(ttft_s=0.2, itl_s=0.04, tokens=6, serial=True)


@pytest.mark.parametrize("fake_server", [SERIAL], indirect=True)
def test_search_finds_the_capacity_of_a_server(fake_server: FakeServer, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"  # one request per session: the rate is requests/s
    prompts.write_text("".join(json.dumps({"prompt": f"p{k}"}) + "\n" for k in range(40)))
    cfg = BenchConfig(
        model="fake",
        url=fake_server.url,
        workload="file",
        workload_options=WorkloadOptions(path=prompts),
        load="search",
        rate=0.75,
        warmup=0,
        max_tokens=6,
        sample_interval_s=0.05,
        # below capacity TTFT stays ~0.2 s; above it every request waits longer than the last:
        # at 3/s the queue grows by 1 - 2.5/3 requests per arrival, so from the 7th request on
        # each one waits more than a service time and misses
        slo={"ttft": 0.6},
        search=SearchSettings(target=0.9, precision=0.25, relative=False, max_steps=5, requests=12),
    )
    summary = run_bench(cfg, tmp_path / "run")
    search = summary.search
    assert search is not None and search.capacity_rate is not None
    # the true capacity is 2.5/s; 12 requests cannot see overload just above it, so the found
    # rate may be a little above; the doubling walk brackets it between 1.5 and 3
    assert 1.5 <= search.capacity_rate < 3.0
    rates = [s.rate for s in search.steps]
    assert rates[:3] == [0.75, 1.5, 3.0]
    assert search.steps[1].passed  # 1.5/s: 60 % busy, no queue
    assert not search.steps[2].passed  # 3/s is past the capacity
    assert all(s.passed == (s.attainment is not None and s.attainment >= 0.9) for s in search.steps)
    # the walk in search.json and the summary's recomputation from records agree
    stored = json.loads((tmp_path / "run" / "search.json").read_text())
    assert [s["rate"] for s in stored["steps"]] == rates
    assert [s["attainment"] for s in stored["steps"]] == [s.attainment for s in search.steps]
    assert summary.slo is not None
    assert [s.stage for s in summary.slo.stages] == [s.stage for s in search.steps]
    assert all(s.requests == 12 for s in search.steps)
    assert (tmp_path / "run" / "summary.json").exists()
