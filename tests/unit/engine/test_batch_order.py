"""The order of a step's tokens in the llama.cpp batch, without llama.cpp."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

from edgellm.engine.llama import LlamaModel, LlamaSettings
from edgellm.engine.scheduler import Scheduler


@dataclass
class RecordingModel:
    """Records the (token, position, sequence) of every token a step puts into the batch."""

    settings: LlamaSettings
    n_seq_max: int = 4
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
