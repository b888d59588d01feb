"""The one engine loop, driven by hand or by its thread, with a fake model instead of llama.cpp:
admission order, the queue bound, cancellation, failures and shutdown."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import numpy.typing as npt
import pytest

from edgellm.engine.jobs import GenerationJob
from edgellm.engine.llama import LlamaModel, LlamaSettings
from edgellm.engine.scheduler import Scheduler
from edgellm.engine.types import (
    Failed,
    Finished,
    FinishReason,
    GenerationEvent,
    GenerationRequest,
    LoglikelihoodRequest,
    TextDelta,
)
from edgellm.errors import OverloadedError

WORD = 5  # the token the fake model always samples: the text "w"


class FakeSampler:
    def sample(self, index: int = -1) -> int:
        return WORD

    def close(self) -> None:
        pass


@dataclass
class FakeModel:
    """Enough of `LlamaModel` for the loop: batches are recorded, decoding always succeeds
    (unless `fail` is set), every sample is WORD."""

    settings: LlamaSettings = field(default_factory=lambda: LlamaSettings(n_seq_max=1))
    n_seq_max: int = 1
    n_threads: int = 1
    n_ctx: int = 512
    kv_cells: int = 512
    fail: threading.Event = field(default_factory=threading.Event)
    decoded: list[list[tuple[int, int, int]]] = field(default_factory=list)
    _batch: list[tuple[int, int, int]] = field(default_factory=list)

    def new_sampler(self, **_: object) -> FakeSampler:
        return FakeSampler()

    def logits(self, index: int = -1) -> npt.NDArray[np.float32]:
        return np.zeros(8, dtype=np.float32)  # every token of an 8-token vocabulary: log(1/8)

    def is_eog(self, token: int) -> bool:
        return False

    def token_bytes(self, token: int) -> bytes:
        return b"w"

    def batch_clear(self) -> None:
        self._batch = []

    def batch_add(self, token: int, pos: int, seq: int, *, logits: bool) -> int:
        self._batch.append((token, pos, seq))
        return len(self._batch) - 1

    @property
    def batch_len(self) -> int:
        return len(self._batch)

    def batch_decode(self) -> int:
        if self.fail.is_set():
            self.fail.clear()
            raise RuntimeError("boom")
        self.decoded.append(list(self._batch))
        return 0

    def truncate_cache(self, n_keep: int, seq: int = 0) -> bool:
        return True

    def clear_seq(self, seq: int) -> None:
        pass


def job(tag: int, events: list[tuple[int, GenerationEvent]]) -> GenerationJob:
    """A job whose prompt is [tag] and that generates `tag` tokens; events recorded by tag."""
    request = GenerationRequest(prompt_tokens=[tag], max_tokens=tag)
    return GenerationJob(request=request, sink=lambda e: events.append((tag, e)))


def scheduler(model: FakeModel, *, start: bool, max_queue: int = 4) -> Scheduler:
    return Scheduler(cast(LlamaModel, model), n_slots=1, max_queue=max_queue, start=start)


def run_until_idle(sched: Scheduler) -> None:
    for _ in range(1000):
        sched.admit()
        if not any(s.busy for s in sched.slots) and sched.queue_depth == 0:
            return
        sched.step()
    raise AssertionError("the loop did not become idle")


def finished(events: list[tuple[int, GenerationEvent]]) -> list[int]:
    return [tag for tag, e in events if isinstance(e, Finished)]


def wait_until(cond: object, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


def test_one_slot_runs_jobs_first_in_first_out_and_bounds_the_queue() -> None:
    model = FakeModel()
    sched = scheduler(model, start=False, max_queue=2)
    events: list[tuple[int, GenerationEvent]] = []
    for tag in (3, 1, 2):  # one for the free slot, two waiting
        sched.submit_generation(job(tag, events))
    with pytest.raises(OverloadedError) as info:
        sched.submit_generation(job(9, events))
    assert info.value.retry_after >= 1
    run_until_idle(sched)
    assert finished(events) == [3, 1, 2]
    ends = [e for _, e in events if isinstance(e, Finished)]
    assert [e.completion_tokens for e in ends] == [3, 1, 2]
    assert all(e.reason is FinishReason.LENGTH for e in ends)
    text = "".join(e.text for tag, e in events if tag == 3 and isinstance(e, TextDelta))
    assert text == "www"
    # one slot: a prompt, then one token per step, never two requests in one batch
    assert all(
        len({seq for _, _, seq in batch}) == 1 and len(batch) == 1 for batch in model.decoded
    )


def test_a_job_cancelled_while_queued_is_dropped_unreported() -> None:
    sched = scheduler(FakeModel(), start=False)
    events: list[tuple[int, GenerationEvent]] = []
    waiting = job(2, events)
    sched.submit_generation(job(1, events))
    sched.submit_generation(waiting)
    sched.submit_generation(job(3, events))
    waiting.cancelled.set()
    run_until_idle(sched)
    assert finished(events) == [1, 3]
    assert all(tag != 2 for tag, _ in events)


def test_a_running_job_cancelled_finishes_as_cancelled() -> None:
    sched = scheduler(FakeModel(), start=False)
    events: list[tuple[int, GenerationEvent]] = []
    running = job(50, events)
    sched.submit_generation(running)
    sched.admit()
    sched.step()  # the prompt
    sched.step()  # a token
    running.cancelled.set()
    run_until_idle(sched)
    (end,) = [e for _, e in events if isinstance(e, Finished)]
    assert end.reason is FinishReason.CANCELLED and end.completion_tokens < 50


def test_a_failed_step_reaches_the_client_and_the_loop_goes_on() -> None:
    model = FakeModel()
    model.fail.set()
    sched = scheduler(model, start=True)
    events: list[tuple[int, GenerationEvent]] = []
    sched.submit_generation(job(1, events))
    wait_until(lambda: len(events) == 1)
    assert isinstance(events[0][1], Failed) and "boom" in str(events[0][1].error)
    sched.submit_generation(job(2, events))
    wait_until(lambda: finished(events) == [2])
    sched.close()


def test_close_drains_accepted_jobs_then_refuses() -> None:
    sched = scheduler(FakeModel(), start=True)
    events: list[tuple[int, GenerationEvent]] = []
    for tag in (4, 5, 6):
        sched.submit_generation(job(tag, events))
    sched.close()
    assert finished(events) == [4, 5, 6]
    with pytest.raises(OverloadedError):
        sched.submit_generation(job(7, events))


def test_scoring_a_continuation_the_slot_already_holds_scores_every_token() -> None:
    # after generating a continuation, its tokens sit in the slot's cache; scoring the same
    # text must still evaluate each continuation position for its logits
    sched = scheduler(FakeModel(), start=False)
    context, continuation = [1, 2, 3, 4], [5, 6, 7]
    sched.slots[0].cached = [*context, *continuation]
    future = sched.submit_loglikelihood([LoglikelihoodRequest(context, continuation)])
    run_until_idle(sched)
    (result,) = future.result(timeout=0)
    assert result.n_tokens == 3 and len(result.token_logprobs) == 3
    assert result.logprob == pytest.approx(3 * np.log(1 / 8))
    assert sched.slots[0].cached == [*context, *continuation[:-1]]


class RampModel(FakeModel):
    """Logits that differ by token (token t scores t), so log-probs differ too."""

    def logits(self, index: int = -1) -> npt.NDArray[np.float32]:
        return np.arange(8, dtype=np.float32)


def test_scoring_with_alternatives_gives_the_same_logprobs_and_the_tokens() -> None:
    """An echo's scoring job (top_logprobs set) computes the very log-probs of a plain one, and
    each token with its alternatives, most likely first."""
    results = []
    for top in (None, 2):
        sched = scheduler(RampModel(), start=False)
        future = sched.submit_loglikelihood([LoglikelihoodRequest([1], [3, 7, 0], top)])
        run_until_idle(sched)
        results.append(future.result(timeout=0)[0])
    plain, detailed = results
    assert plain.tokens == () and plain.token_logprobs == detailed.token_logprobs
    assert [t.token_id for t in detailed.tokens] == [3, 7, 0]
    assert [t.logprob for t in detailed.tokens] == list(plain.token_logprobs)
    assert all([a.token_id for a in t.top] == [7, 6] for t in detailed.tokens)
    assert detailed.token_logprobs[1] > detailed.token_logprobs[0] > detailed.token_logprobs[2]


class SaveFailsModel(FakeModel):
    def save_seq(self, seq: int) -> bytearray:
        raise RuntimeError("save failed")


def test_a_failed_admission_fails_its_job_and_the_loop_goes_on() -> None:
    sched = scheduler(SaveFailsModel(), start=False)
    sched.slots[0].cached = list(range(100, 140))  # another conversation: saved before reuse
    events: list[tuple[int, GenerationEvent]] = []
    sched.submit_generation(job(1, events))
    sched.submit_generation(job(2, events))
    run_until_idle(sched)
    assert isinstance(events[0][1], Failed) and events[0][0] == 1
    assert "save failed" in str(events[0][1].error)
    assert finished(events) == [2]  # the slot was cleared: nothing left to save
