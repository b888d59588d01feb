from __future__ import annotations

import asyncio
import time

import pytest

from edgellm.bench.load import Gate, LoadSettings, get_load_profile, poisson_gaps
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


def _offsets(rec: Recorder) -> list[float]:
    return [t - rec.starts[0][1] for _, t in rec.starts]


def test_constant_rate_starts_on_schedule() -> None:
    offsets = _offsets(_run("constant", 5, LoadSettings(rate=10.0)))
    # arrivals follow an absolute schedule: never early, and one late start does not shift
    # the next ones (upper margin: a loaded machine)
    for i, t in enumerate(offsets):
        assert i * 0.1 - 0.002 <= t <= i * 0.1 + 0.06


def test_poisson_gaps_depend_on_the_seed_only() -> None:
    def draw(seed: int, n: int = 2000) -> list[float]:
        gap = poisson_gaps(20.0, seed)
        return [gap() for _ in range(n)]

    assert draw(3) == draw(3)
    assert draw(3) != draw(4)
    assert sum(draw(5)) / 2000 == pytest.approx(1 / 20.0, rel=0.1)  # mean gap 1/rate


def test_poisson_arrivals_follow_their_seeded_schedule() -> None:
    rate, n = 10.0, 6
    rec = _run("poisson", n, LoadSettings(rate=rate, seed=3))
    gap = poisson_gaps(rate, 3)
    planned = [0.0]
    for _ in range(n - 1):
        planned.append(planned[-1] + gap())
    for got, want in zip(_offsets(rec), planned, strict=True):
        assert want - 0.002 <= got <= want + 0.06


def test_sweep_runs_synchronous_throughput_then_rates() -> None:
    rec = _run("sweep", 6, LoadSettings(concurrency=3, sweep_points=2, max_requests=6))
    stages = [s for s, _ in rec.starts]
    assert stages[:6] == ["sweep-synchronous"] * 6
    assert stages[6:12] == ["sweep-throughput"] * 6
    assert len({s for s in stages[12:]}) == 2


def test_unknown_profile() -> None:
    with pytest.raises(ValueError, match="synchronous"):
        get_load_profile("burst")
