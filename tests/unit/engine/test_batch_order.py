"""The order of a step's tokens in the llama.cpp batch, without llama.cpp."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

from edgellm.engine.llama import LlamaModel, LlamaSettings
from edgellm.engine.pacing import FIRST_CHUNK
from edgellm.engine.scheduler import Scheduler


@dataclass
class RecordingModel:
    """Records the (token, position, sequence) of every token a step puts into the batch."""

    settings: LlamaSettings
    n_seq_max: int = 4
    n_threads: int = 1
    batch: list[tuple[int, int, int]] = field(default_factory=list)

    def batch_clear(self) -> None:
        self.batch = []

    def batch_add(self, token: int, pos: int, seq: int, *, logits: bool) -> int:
        self.batch.append((token, pos, seq))
        return len(self.batch) - 1

    @property
    def batch_len(self) -> int:
        return len(self.batch)

    def batch_decode(self) -> int:
        return 0


@dataclass
class FakeGeneration:
    prompt: list[int]
    pos: int
    next_token: int = 7
    job: Any = field(default_factory=lambda: SimpleNamespace(cancelled=threading.Event()))
    started: float = 0.0
    timings: Any = field(default_factory=SimpleNamespace)

    @property
    def prefilling(self) -> bool:
        return self.pos < len(self.prompt)

    def accept(self, index: int) -> None:
        return None  # keeps generating


def test_a_joining_prompt_goes_in_by_sequence_id_before_the_decoding_slots() -> None:
    model = RecordingModel(LlamaSettings(n_seq_max=4, n_batch=512))
    sched = Scheduler(cast(LlamaModel, model), n_slots=4, prefill_chunk=3, start=False)
    slots = sched.slots
    for slot in slots[1:]:  # slots 1-3 decode, admitted first
        slot.gen = cast(Any, FakeGeneration(prompt=[1, 2], pos=2))
        slot.order = slot.seq
    # slot 0 (the only free one) took a long prompt that joined last
    slots[0].gen = cast(Any, FakeGeneration(prompt=list(range(100, 200)), pos=0))
    slots[0].order = 9
    sched.step()
    # llama.cpp's per-slot-cells split takes consecutive sequence ids in order of appearance:
    # 0, 1, 2, 3 fit one micro-batch, where 1, 2, 3, 0 would need two
    assert [seq for _, _, seq in model.batch] == [0, 0, 0, 1, 2, 3]
    assert model.batch[:3] == [(100, 0, 0), (101, 1, 0), (102, 2, 0)]
    assert slots[0].cached == [100, 101, 102]


def _prefilled_this_step(long_left: int, long_order: int, short_order: int) -> dict[int, int]:
    """Prompt tokens each of two prefilling slots got in one step with an 8-token budget while
    two other slots decode: slot 0 has `long_left` of a 100-token prompt left, slot 1 all of a
    7-token one."""
    model = RecordingModel(LlamaSettings(n_seq_max=4, n_batch=512))
    sched = Scheduler(cast(LlamaModel, model), n_slots=4, prefill_chunk=8, start=False)
    slots = sched.slots
    for slot in slots[2:]:
        slot.gen = cast(Any, FakeGeneration(prompt=[1, 2], pos=2))
        slot.order = slot.seq
    slots[0].gen = cast(Any, FakeGeneration(prompt=list(range(100, 200)), pos=100 - long_left))
    slots[0].order = long_order
    slots[1].gen = cast(Any, FakeGeneration(prompt=[0, *range(50, 57)], pos=1))
    slots[1].order = short_order
    sched.step()
    counts = {0: 0, 1: 0}
    for _, _, seq in model.batch:
        if seq in counts:
            counts[seq] += 1
    return counts


def test_a_short_prompt_joining_a_long_prefill_goes_first_whatever_the_admission_order() -> None:
    # admitted after the long prompt or before it, the short one takes its 7 tokens at once
    assert _prefilled_this_step(long_left=100, long_order=5, short_order=6) == {0: 1, 1: 7}
    assert _prefilled_this_step(long_left=100, long_order=6, short_order=5) == {0: 1, 1: 7}
    # negative: what counts is what is left, so a long prompt with 3 tokens to go is first
    assert _prefilled_this_step(long_left=3, long_order=6, short_order=5) == {0: 3, 1: 5}


def _first_step(*, with_short: bool) -> list[int]:
    """The sequence ids of the first step's tokens. Nobody decodes; slot 0 has a 300-token
    prompt, slot 1 (`with_short`) a 7-token one whose first token comes at the end of the step;
    slots 2-3 are free."""
    model = RecordingModel(LlamaSettings(n_seq_max=4, n_batch=512))
    sched = Scheduler(cast(LlamaModel, model), n_slots=4, start=False)
    slots = sched.slots
    slots[0].gen = cast(Any, FakeGeneration(prompt=list(range(100, 400)), pos=0))
    slots[0].order = 1
    if with_short:
        slots[1].gen = cast(Any, FakeGeneration(prompt=list(range(50, 57)), pos=0))
        slots[1].order = 2
    sched.step()
    return [seq for _, _, seq in model.batch]


def test_a_prompt_finishing_its_prefill_keeps_the_rest_of_the_step_short() -> None:
    seqs = _first_step(with_short=True)
    assert seqs.count(1) == 7
    # the long prompt gets a first mixed chunk, not the rest of a prefill-only step
    assert 1 <= seqs.count(0) <= FIRST_CHUNK
    # negative: alone on a node that serves one request at a time, the long prompt is
    # prefilled whole (nothing suggests that another request may join)
    assert _first_step(with_short=False).count(0) == 300
