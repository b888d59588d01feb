"""Load profiles (GuideLLM's set), registered by name, each with one method: `run`.

A profile decides *when* sessions start; the runner's `run_session` replays a session's turns
in order. Every profile stops starting requests once the `Gate` closes (request count or
duration reached); requests in flight finish and are recorded.

- `synchronous`: one request at a time (the paper's method).
- `concurrent`: N sessions in flight at once (`--concurrency`).
- `constant`: sessions start at a fixed rate (`--rate` per second).
- `poisson`: sessions start as a Poisson process of mean `--rate` (seeded).
- `sweep`: synchronous, then as fast as possible (concurrency N), then `--sweep-points` constant
  rates evenly spaced between the two measured rates; each a stage with its own budget.
- `search`: the highest constant (or Poisson) rate whose SLO attainment stays at or above a
  target, by bounded bisection (`bench/search.py`); each step a short stage.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from edgellm.bench.search import SearchResult, SearchSettings, StepMeasure, bisect_capacity
from edgellm.bench.workloads import Session


@dataclass
class Gate:
    """Bounds one stage: at most `max_requests` started, none after `max_duration_s`."""

    max_requests: int | None = None
    max_duration_s: float | None = None
    started: int = 0
    completed: int = 0
    t0: float = field(default_factory=time.monotonic)
    t_last_done: float | None = None

    def take(self) -> bool:
        """Reserve one request if the budget allows."""
        if self.max_requests is not None and self.started >= self.max_requests:
            return False
        if self.max_duration_s is not None and time.monotonic() - self.t0 >= self.max_duration_s:
            return False
        self.started += 1
        return True

    def done(self) -> None:
        self.completed += 1
        self.t_last_done = time.monotonic()

    @property
    def is_open(self) -> bool:
        if self.max_requests is not None and self.started >= self.max_requests:
            return False
        return self.max_duration_s is None or time.monotonic() - self.t0 < self.max_duration_s

    def rate(self) -> float:
        """Completed requests per second over the stage."""
        end = self.t_last_done or time.monotonic()
        return self.completed / (end - self.t0) if end > self.t0 else 0.0


RunSession = Callable[[Session, Gate, str], Coroutine[Any, Any, None]]
"""Replays one session: (session, gate, stage name)."""


@dataclass
class LoadSettings:
    concurrency: int = 4
    rate: float = 1.0
    sweep_points: int = 3
    seed: int = 0
    max_requests: int | None = None
    max_duration_s: float | None = None
    search: SearchSettings | None = None
    judge: Callable[[str], StepMeasure] | None = None
    """SLO verdict of a finished stage, by its name (the search's feedback)."""
    on_search: Callable[[SearchResult], None] | None = None

    def gate(self) -> Gate:
        return Gate(self.max_requests, self.max_duration_s)


class LoadProfile(Protocol):
    async def run(
        self, sessions: Sequence[Session], run_session: RunSession, settings: LoadSettings
    ) -> None: ...


async def _workers(
    sessions: Sequence[Session], run_session: RunSession, gate: Gate, n: int, stage: str
) -> None:
    queue: asyncio.Queue[Session] = asyncio.Queue()
    for s in sessions:
        queue.put_nowait(s)

    async def worker() -> None:
        while gate.is_open:
            try:
                session = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await run_session(session, gate, stage)

    await asyncio.gather(*(worker() for _ in range(max(1, n))))


async def _arrivals(
    sessions: Sequence[Session],
    run_session: RunSession,
    gate: Gate,
    gaps: Callable[[], float],
    stage: str,
) -> None:
    tasks = []
    next_at = time.monotonic()
    for session in sessions:
        delay = next_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if not gate.is_open:
            break
        tasks.append(asyncio.create_task(run_session(session, gate, stage)))
        next_at += gaps()
    await asyncio.gather(*tasks)


def poisson_gaps(rate: float, seed: int) -> Callable[[], float]:
    """Successive gaps of a Poisson process of `rate` per second: the same for the same seed."""
    rng = random.Random(seed)
    return lambda: rng.expovariate(rate)


def _fixed_gap(gap: float) -> Callable[[], float]:
    return lambda: gap


Arrivals = Literal["constant", "poisson"]


def arrival_gaps(arrivals: Arrivals, rate: float, seed: int) -> Callable[[], float]:
    """Gaps between session starts at `rate` per second: even, or a seeded Poisson process."""
    return poisson_gaps(rate, seed) if arrivals == "poisson" else _fixed_gap(1.0 / rate)


class Synchronous:
    async def run(
        self, sessions: Sequence[Session], run_session: RunSession, settings: LoadSettings
    ) -> None:
        await _workers(sessions, run_session, settings.gate(), 1, "synchronous")


class Concurrent:
    async def run(
        self, sessions: Sequence[Session], run_session: RunSession, settings: LoadSettings
    ) -> None:
        stage = f"concurrent-{settings.concurrency}"
        await _workers(sessions, run_session, settings.gate(), settings.concurrency, stage)


@dataclass(frozen=True)
class Rate:
    """`constant` and `poisson`: sessions start at `--rate` per second, spaced `arrivals`."""

    arrivals: Arrivals

    async def run(
        self, sessions: Sequence[Session], run_session: RunSession, settings: LoadSettings
    ) -> None:
        if settings.rate <= 0:
            raise ValueError("--rate must be positive")
        stage = f"{self.arrivals}-{settings.rate:g}"
        gaps = arrival_gaps(self.arrivals, settings.rate, settings.seed)
        await _arrivals(sessions, run_session, settings.gate(), gaps, stage)


class Sweep:
    async def run(
        self, sessions: Sequence[Session], run_session: RunSession, settings: LoadSettings
    ) -> None:
        sync_gate = settings.gate()
        await _workers(sessions, run_session, sync_gate, 1, "sweep-synchronous")
        max_gate = settings.gate()
        await _workers(sessions, run_session, max_gate, settings.concurrency, "sweep-throughput")
        low, high = sync_gate.rate(), max_gate.rate()
        if low <= 0 or high <= low:
            return
        n = settings.sweep_points
        for k in range(1, n + 1):
            rate = low + (high - low) * k / (n + 1)
            await _arrivals(
                sessions, run_session, settings.gate(), _fixed_gap(1.0 / rate), f"sweep-{rate:.3g}"
            )


class Search:
    async def run(
        self, sessions: Sequence[Session], run_session: RunSession, settings: LoadSettings
    ) -> None:
        search, judge = settings.search, settings.judge
        if search is None or judge is None:
            raise ValueError("--load search needs --slo (and a target attainment)")
        if not sessions:
            return
        offset = 0

        async def measure(step: int, rate: float, stage: str) -> StepMeasure:
            nonlocal offset
            # each step starts where the previous one stopped in the workload, so that a
            # workload with enough distinct sessions does not repeat a prompt
            # (a repeat is a prefix-cache hit)
            count = search.requests
            chosen = [sessions[(offset + k) % len(sessions)] for k in range(count)]
            offset += count
            gaps = arrival_gaps(search.arrivals, rate, settings.seed + step)
            gate = Gate(search.requests, search.duration_s)
            await _arrivals(chosen, run_session, gate, gaps, stage)
            return judge(stage)

        result = await bisect_capacity(measure, settings.rate, search)
        if settings.on_search is not None:
            settings.on_search(result)


PROFILES: dict[str, Callable[[], LoadProfile]] = {
    "synchronous": Synchronous,
    "concurrent": Concurrent,
    "constant": lambda: Rate("constant"),
    "poisson": lambda: Rate("poisson"),
    "sweep": Sweep,
    "search": Search,
}


def get_load_profile(name: str) -> LoadProfile:
    if name not in PROFILES:
        raise ValueError(f"unknown load profile '{name}'; choose from {', '.join(PROFILES)}")
    return PROFILES[name]()
