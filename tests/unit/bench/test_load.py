from __future__ import annotations

import asyncio
import time

import pytest

from edgellm.bench.load import Gate, LoadSettings, get_load_profile
from edgellm.bench.workloads import Session


def _sessions(n: int, turns: int = 1) -> list[Session]:
    return [Session(id=str(i), user_turns=["x"] * turns) for i in range(n)]


class Recorder:
    """Each request takes `duration` seconds; records start times and peak concurrency."""

    def __init__(self, duration: float = 0.05) -> None:
        self.duration = duration
        self.starts: list[tuple[str, float]] = []
        self.active = 0
        self.peak = 0

    async def __call__(self, session: Session, gate: Gate, stage: str) -> None:
        for _ in session.user_turns:
            if not gate.take():
                return
            self.starts.append((stage, time.monotonic()))
            self.active += 1
            self.peak = max(self.peak, self.active)
            await asyncio.sleep(self.duration)
            self.active -= 1
            gate.done()


def _run(name: str, n: int, settings: LoadSettings, turns: int = 1) -> Recorder:
    rec = Recorder()
    asyncio.run(get_load_profile(name).run(_sessions(n, turns), rec, settings))
    return rec


def test_synchronous_is_one_at_a_time_and_bounded_by_count() -> None:
    rec = _run("synchronous", 10, LoadSettings(max_requests=4), turns=3)
    assert len(rec.starts) == 4 and rec.peak == 1


def test_concurrent_keeps_n_in_flight() -> None:
    rec = _run("concurrent", 8, LoadSettings(concurrency=4))
    assert len(rec.starts) == 8 and rec.peak == 4


def test_duration_bound() -> None:
    t0 = time.monotonic()
    rec = _run("synchronous", 1000, LoadSettings(max_duration_s=0.3))
    assert time.monotonic() - t0 < 2.0
    assert 2 <= len(rec.starts) <= 7


def test_constant_rate_spacing() -> None:
    rec = _run("constant", 5, LoadSettings(rate=10.0))
    gaps = [b - a for (_, a), (_, b) in zip(rec.starts, rec.starts[1:], strict=False)]
    assert all(g == pytest.approx(0.1, abs=0.08) for g in gaps)


def test_poisson_is_seeded() -> None:
    def gaps(seed: int) -> list[float]:
        rec = _run("poisson", 6, LoadSettings(rate=50.0, seed=seed))
        return [b - a for (_, a), (_, b) in zip(rec.starts, rec.starts[1:], strict=False)]

    assert len(gaps(1)) == 5
    # same seed -> same arrival schedule (within scheduling noise)
    assert gaps(3) == pytest.approx(gaps(3), abs=0.03)


def test_sweep_runs_synchronous_throughput_then_rates() -> None:
    rec = _run("sweep", 6, LoadSettings(concurrency=3, sweep_points=2, max_requests=6))
    stages = [s for s, _ in rec.starts]
    assert stages[:6] == ["sweep-synchronous"] * 6
    assert stages[6:12] == ["sweep-throughput"] * 6
    assert len({s for s in stages[12:]}) == 2


def test_unknown_profile() -> None:
    with pytest.raises(ValueError, match="synchronous"):
        get_load_profile("burst")
