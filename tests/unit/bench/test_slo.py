"""SLO arithmetic: met / missed / errored / cancelled, attainment, goodput; parsing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from edgellm.bench.client import RequestSpec, measure
from edgellm.bench.records import RequestRecord
from edgellm.bench.resources import PhaseTracker
from edgellm.bench.run import BenchConfig, Hooks, _Replay
from edgellm.bench.slo import SloError, evaluate, outcome, parse_slo, slo_summary, tpot_s
from edgellm.bench.workloads import Session
from edgellm.cli import app
from tests.unit.bench.fakes import FakeBehaviour, FakeServer


def _record(
    start: float,
    ttft: float | None = 0.1,
    e2e: float | None = 1.0,
    tokens: int | None = 10,
    *,
    ok: bool = True,
    cancelled: bool = False,
    gaps: list[float] | None = None,
    stage: str = "main",
) -> RequestRecord:
    return RequestRecord(
        request_id=0,
        model="m",
        stage=stage,
        start_s=start,
        ttft_s=ttft,
        e2e_s=e2e,
        completion_tokens=tokens,
        ok=ok,
        cancelled=cancelled,
        itl_s=gaps or [],
    )


def test_parse_slo_units_and_subsets() -> None:
    assert parse_slo("ttft=2s,itl=200ms,e2e=1min,tpot=50ms") == pytest.approx(
        {"ttft": 2.0, "itl": 0.2, "e2e": 60.0, "tpot": 0.05}
    )
    assert parse_slo(" E2E = 1.5s ") == {"e2e": 1.5}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ttft=2", "not a duration with a unit"),
        ("ttft=2h", "not a duration with a unit"),
        ("latency=2s", "unknown SLO 'latency'"),
        ("ttft=2s,ttft=3s", "given twice"),
        ("ttft=0s", "must be positive"),
        ("ttft", "expected KEY=VALUE"),
        ("", "no SLO given"),
    ],
)
def test_parse_slo_rejects_bad_input(text: str, message: str) -> None:
    with pytest.raises(SloError, match=message):
        parse_slo(text)


def test_cli_bad_slo_is_a_bad_parameter_and_creates_nothing(tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["bench", "--url", "http://127.0.0.1:9", "--slo", "ttft=2", "--out", str(run)]
    )
    assert result.exit_code == 2
    assert "Invalid value for --slo" in result.output and "unit" in result.output
    assert not run.exists()


def test_tpot_is_vllms_definition() -> None:
    assert tpot_s(_record(0, ttft=0.1, e2e=1.0, tokens=10)) == pytest.approx(0.1)
    assert tpot_s(_record(0, ttft=0.1, e2e=1.0, tokens=1)) is None  # no second token
    limits = {"tpot": 0.1}
    assert outcome(_record(0, ttft=0.1, e2e=1.0, tokens=10), limits) == "met"
    assert outcome(_record(0, ttft=0.1, e2e=1.01, tokens=10), limits) == "missed"
    assert outcome(_record(0, ttft=0.1, e2e=5.0, tokens=1), limits) == "met"


def test_itl_bound_is_on_the_largest_gap() -> None:
    limits = {"itl": 0.2}
    assert outcome(_record(0, gaps=[0.05, 0.2, 0.1]), limits) == "met"
    assert outcome(_record(0, gaps=[0.05, 0.21, 0.01]), limits) == "missed"


def test_attainment_and_goodput_count_errors_as_misses_and_leave_cancelled_out() -> None:
    limits = {"ttft": 0.5, "e2e": 2.0}
    records = [
        _record(0.0, ttft=0.1, e2e=1.0, tokens=10),  # met
        _record(1.0, ttft=0.2, e2e=1.5, tokens=20),  # met
        _record(2.0, ttft=0.9, e2e=1.5, tokens=30),  # misses ttft only
        _record(3.0, ttft=0.1, e2e=3.0, tokens=40),  # misses e2e only, ends at 6.0
        _record(4.0, ttft=None, e2e=0.5, tokens=0, ok=False),  # errored
        _record(5.0, ttft=0.1, e2e=9.0, tokens=3, ok=False, cancelled=True),  # not counted
    ]
    r = evaluate(records, limits, "main")
    assert (r.counted, r.met, r.missed, r.errored, r.cancelled) == (5, 2, 2, 1, 1)
    assert r.attainment == pytest.approx(2 / 5)
    # the errored request is outside every bound; the cancelled one is in no denominator
    assert r.per_constraint == pytest.approx({"ttft": 3 / 5, "e2e": 3 / 5})
    # window: first send (0.0) to last end of a counted request (3.0 + 3.0)
    assert r.duration_s == pytest.approx(6.0)
    assert r.goodput_rps == pytest.approx(2 / 6.0)
    assert r.goodput_tps == pytest.approx((10 + 20) / 6.0)
    assert r.request_rate == pytest.approx(5 / 6.0)


def test_summary_per_stage_and_overall_skip_warmup() -> None:
    records = [
        _record(0.0, stage="a"),
        _record(1.0, stage="a", ttft=3.0),
        _record(2.0, stage="b"),
        _record(0.0, stage="warmup", ttft=9.0).model_copy(update={"warmup": True}),
    ]
    summary = slo_summary(records, {"ttft": 1.0})
    assert [s.stage for s in summary.stages] == ["a", "b"]
    assert [s.attainment for s in summary.stages] == [0.5, 1.0]
    assert summary.overall.counted == 3 and summary.overall.met == 2


def _measure(url: str) -> RequestRecord:
    async def go() -> RequestRecord:
        async with httpx.AsyncClient(base_url=url) as client:
            record = RequestRecord(request_id=0, model="fake", start_s=0.0)
            spec = RequestSpec(model="fake", messages=[{"role": "user", "content": "hi"}])
            return await measure(client, spec, record)

    return asyncio.run(go())


@pytest.mark.parametrize(
    "fake_server", [FakeBehaviour(ttft_s=0.01, itl_s=0.01, tokens=6, cut_after=3)], indirect=True
)
def test_a_stream_cut_short_by_the_server_is_an_error(fake_server: FakeServer) -> None:
    record = _measure(fake_server.url)
    assert record.chunks == 3 and not record.ok and "cut short" in (record.error or "")
    assert outcome(record, {"e2e": 60.0}) == "errored"


@pytest.mark.parametrize(
    "fake_server", [FakeBehaviour(ttft_s=0.01, itl_s=0.01, tokens=6)], indirect=True
)
def test_a_whole_stream_is_not_an_error(fake_server: FakeServer) -> None:
    record = _measure(fake_server.url)
    assert record.chunks == 6 and record.ok and record.error is None
    assert outcome(record, {"e2e": 60.0}) == "met"


@pytest.mark.parametrize(
    "fake_server", [FakeBehaviour(ttft_s=5.0, itl_s=0.01, tokens=2)], indirect=True
)
def test_a_request_the_benchmark_cancels_is_recorded_as_cancelled(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    async def go() -> None:
        async with httpx.AsyncClient(base_url=fake_server.url) as client:
            cfg = BenchConfig(model="fake", url=fake_server.url)
            replay = _Replay(cfg, client, tmp_path, PhaseTracker(), Hooks(), 0)
            session = Session(id="s", user_turns=["hi"])
            spec = replay._spec(session, [{"role": "user", "content": "hi"}])
            task = asyncio.create_task(replay.request(spec, session, 0, "main", False))
            await asyncio.sleep(0.3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(go())
    [line] = (tmp_path / "records.jsonl").read_text().splitlines()
    record = RequestRecord.model_validate(json.loads(line))
    assert record.cancelled and not record.ok
    result = evaluate([record], {"ttft": 1.0}, "main")
    assert (result.counted, result.cancelled, result.attainment) == (0, 1, None)
