import threading
import time

import pytest

from edgellm.engine.jobs import GenerationJob
from edgellm.engine.scheduler import SerialScheduler
from edgellm.engine.types import (
    Failed,
    Finished,
    FinishReason,
    GenerationEvent,
    GenerationRequest,
    LoglikelihoodRequest,
    LoglikelihoodResult,
    Timings,
)
from edgellm.errors import OverloadedError


class FakeRunner:
    """Records the order of jobs; blocks each generation until released."""

    def __init__(self) -> None:
        self.order: list[int] = []
        self.release = threading.Event()
        self.fail = False

    def generate(self, job: GenerationJob) -> None:
        self.release.wait(5)
        if self.fail:
            raise RuntimeError("boom")
        self.order.append(job.request.max_tokens)
        job.sink(Finished(FinishReason.STOP, 1, 1, Timings()))

    def loglikelihood(self, req: LoglikelihoodRequest) -> LoglikelihoodResult:
        return LoglikelihoodResult(-1.0, True, (-1.0,), 1)


def job(tag: int, events: list[GenerationEvent]) -> GenerationJob:
    return GenerationJob(
        request=GenerationRequest(prompt_tokens=[1], max_tokens=tag), sink=events.append
    )


def wait_until(cond, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


def test_fifo_order_and_bounded_queue() -> None:
    runner = FakeRunner()
    sched = SerialScheduler(runner, max_queue=2)  # type: ignore[arg-type]
    events: list[GenerationEvent] = []
    sched.submit_generation(job(1, events))
    wait_until(lambda: sched.running == 1)
    sched.submit_generation(job(2, events))
    sched.submit_generation(job(3, events))
    assert sched.queue_depth == 2
    with pytest.raises(OverloadedError) as info:
        sched.submit_generation(job(4, events))
    assert info.value.retry_after >= 1
    runner.release.set()
    wait_until(lambda: len(runner.order) == 3)
    assert runner.order == [1, 2, 3]
    sched.close()


def test_cancelled_while_queued_is_skipped() -> None:
    runner = FakeRunner()
    sched = SerialScheduler(runner, max_queue=4)  # type: ignore[arg-type]
    events: list[GenerationEvent] = []
    sched.submit_generation(job(1, events))
    waiting = job(2, events)
    sched.submit_generation(waiting)
    waiting.cancelled.set()
    sched.submit_generation(job(3, events))
    runner.release.set()
    wait_until(lambda: len(runner.order) == 2)
    assert runner.order == [1, 3]
    sched.close()


def test_runner_exception_reaches_the_client() -> None:
    runner = FakeRunner()
    runner.fail = True
    runner.release.set()
    sched = SerialScheduler(runner)  # type: ignore[arg-type]
    events: list[GenerationEvent] = []
    sched.submit_generation(job(1, events))
    wait_until(lambda: len(events) == 1)
    assert isinstance(events[0], Failed) and "boom" in str(events[0].error)
    # the worker survives and serves the next job
    runner.fail = False
    sched.submit_generation(job(2, events))
    wait_until(lambda: len(events) == 2)
    assert isinstance(events[1], Finished)
    sched.close()


def test_close_drains_accepted_jobs() -> None:
    runner = FakeRunner()
    sched = SerialScheduler(runner)  # type: ignore[arg-type]
    events: list[GenerationEvent] = []
    for tag in (1, 2, 3):
        sched.submit_generation(job(tag, events))
    runner.release.set()
    sched.close()
    assert runner.order == [1, 2, 3]
    with pytest.raises(OverloadedError):
        sched.submit_generation(job(4, events))


def test_loglikelihood_future() -> None:
    runner = FakeRunner()
    sched = SerialScheduler(runner)  # type: ignore[arg-type]
    future = sched.submit_loglikelihood([LoglikelihoodRequest([1], [2])])
    assert future.result(timeout=5)[0].logprob == -1.0
    sched.close()
