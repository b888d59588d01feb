"""Schedulers decide when each job runs on the model.

`SerialScheduler` runs one job at a time, first in first out, on a dedicated worker thread, with
a bounded queue (a full queue is an `OverloadedError`, which the API turns into 429 +
Retry-After). A continuous-batching scheduler implements the same `Scheduler` protocol, so the
engine and the server do not change when it arrives.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol, TypeVar

from edgellm.engine.jobs import GenerationJob, SchedulerStats
from edgellm.engine.runner import Runner
from edgellm.engine.types import Failed, LoglikelihoodRequest, LoglikelihoodResult
from edgellm.errors import OverloadedError

log = logging.getLogger(__name__)

T = TypeVar("T")


class Scheduler(Protocol):
    def submit_generation(self, job: GenerationJob) -> None:
        """Queue a generation; its events go to `job.sink`. Raises OverloadedError if full."""

    def submit_loglikelihood(
        self, requests: list[LoglikelihoodRequest]
    ) -> concurrent.futures.Future[list[LoglikelihoodResult]]:
        """Queue a scoring job. Raises OverloadedError if full."""

    @property
    def queue_depth(self) -> int: ...

    @property
    def running(self) -> int: ...

    @property
    def n_slots(self) -> int: ...

    @property
    def stats(self) -> SchedulerStats: ...

    def close(self) -> None: ...


class SerialScheduler:
    def __init__(self, runner: Runner, *, max_queue: int = 32, name: str = "engine") -> None:
        self._runner = runner
        self._max_queue = max_queue
        self._queue: deque[Callable[[], None]] = deque()
        self._cv = threading.Condition()
        self._running = 0
        self._closed = False
        self._mean_job_s = 2.0  # prior for Retry-After until jobs have been measured
        self._thread = threading.Thread(target=self._work, name=f"{name}-worker", daemon=True)
        self._thread.start()

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def running(self) -> int:
        return self._running

    @property
    def n_slots(self) -> int:
        return 1

    @property
    def stats(self) -> SchedulerStats:
        return self._runner.stats

    def submit_generation(self, job: GenerationJob) -> None:
        def run() -> None:
            if job.cancelled.is_set():
                return  # the client left while waiting: nothing to do, nothing to report
            try:
                self._runner.generate(job)
            except Exception as exc:  # reported to the waiting client, never lost
                log.exception("generation failed")
                job.sink(Failed(error=exc))

        self._enqueue(run)

    def submit_loglikelihood(
        self, requests: list[LoglikelihoodRequest]
    ) -> concurrent.futures.Future[list[LoglikelihoodResult]]:
        future: concurrent.futures.Future[list[LoglikelihoodResult]] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result([self._runner.loglikelihood(r) for r in requests])
            except Exception as exc:
                future.set_exception(exc)

        self._enqueue(run)
        return future

    def retry_after(self) -> float:
        """Seconds until a slot is likely free: queued jobs times the mean job duration."""
        return max(1.0, math.ceil((len(self._queue) + self._running) * self._mean_job_s))

    def _enqueue(self, run: Callable[[], None]) -> None:
        with self._cv:
            if self._closed:
                raise OverloadedError("the engine is shutting down", retry_after=self.retry_after())
            if len(self._queue) >= self._max_queue:
                raise OverloadedError(
                    f"the server is busy: {len(self._queue)} requests are already waiting",
                    retry_after=self.retry_after(),
                )
            self._queue.append(run)
            self._cv.notify()

    def _work(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    self._cv.wait()
                if self._closed and not self._queue:
                    return
                run = self._queue.popleft()
                self._running = 1
            started = time.perf_counter()
            try:
                run()
            finally:
                elapsed = time.perf_counter() - started
                self._mean_job_s = 0.8 * self._mean_job_s + 0.2 * elapsed
                self._running = 0

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout=30)
