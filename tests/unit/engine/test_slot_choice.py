"""Which slot a new request takes, without llama.cpp: a fake model records the cache operations."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from edgellm.engine.batching import BatchScheduler, Slot
from edgellm.engine.llama import LlamaModel, LlamaSettings


@dataclass
class FakeModel:
    settings: LlamaSettings
    n_seq_max: int = 4
    saved: list[int] = field(default_factory=list)
    cleared: list[int] = field(default_factory=list)

    def save_seq(self, seq: int) -> bytearray:
        self.saved.append(seq)
        return bytearray(b"state")

    def restore_seq(self, seq: int, state: bytearray) -> bool:
        return True

    def truncate_cache(self, n_keep: int, seq: int = 0) -> bool:
        return True

    def clear_seq(self, seq: int) -> None:
        self.cleared.append(seq)


def scheduler(kv_unified: bool) -> Iterator[tuple[BatchScheduler, FakeModel]]:
    model = FakeModel(LlamaSettings(n_seq_max=4, kv_unified=kv_unified))
    sched = BatchScheduler(cast(LlamaModel, model), n_slots=4)
    sched.close()  # no worker: the tests call the placement logic directly
    yield sched, model


@pytest.fixture
def per_slot() -> Iterator[tuple[BatchScheduler, FakeModel]]:
    yield from scheduler(kv_unified=False)


@pytest.fixture
def shared() -> Iterator[tuple[BatchScheduler, FakeModel]]:
    yield from scheduler(kv_unified=True)


def slots(sched: BatchScheduler) -> list[Slot]:
    return cast(list[Slot], sched._slots)


def occupy(sched: BatchScheduler, busy: list[int], cached: dict[int, list[int]]) -> None:
    for slot in slots(sched):
        slot.gen = cast(Any, object()) if slot.seq in busy else None
        slot.cached = list(cached.get(slot.seq, []))


def place(sched: BatchScheduler, prompt: list[int]) -> tuple[int, int]:
    free = [s for s in slots(sched) if not s.busy]
    slot, n_keep = sched._place(free, prompt)
    return slot.seq, n_keep


def test_per_slot_cells_keep_busy_slots_contiguous(
    per_slot: tuple[BatchScheduler, FakeModel],
) -> None:
    sched, model = per_slot
    # Slots 0 and 1 decode; slot 2 holds another conversation, slot 3 is empty. Taking slot 3
    # would split every decode step into two micro-batches ({0, 1} and {3}).
    occupy(sched, busy=[0, 1], cached={2: list(range(100, 140))})
    assert place(sched, list(range(500, 520))) == (2, 0)
    assert model.saved == [2]  # the displaced conversation is kept aside, not lost


def test_shared_cells_take_the_emptiest_slot(shared: tuple[BatchScheduler, FakeModel]) -> None:
    sched, model = shared
    occupy(sched, busy=[0, 1], cached={2: list(range(100, 140))})
    assert place(sched, list(range(500, 520))) == (3, 0)
    assert model.saved == []


def test_a_cached_prefix_wins_over_contiguity(per_slot: tuple[BatchScheduler, FakeModel]) -> None:
    sched, _ = per_slot
    conversation = list(range(100, 140))
    occupy(sched, busy=[0, 1], cached={3: conversation})
    assert place(sched, [*conversation, 7, 8]) == (3, len(conversation))


def test_a_shared_system_prompt_does_not_displace_a_conversation(
    shared: tuple[BatchScheduler, FakeModel],
) -> None:
    sched, model = shared
    system = list(range(1, 31))  # 30 tokens every conversation starts with
    occupy(sched, busy=[], cached={0: [*system, *range(200, 300)]})
    assert place(sched, [*system, *range(600, 620)]) == (1, 0)
    assert model.saved == []


def test_without_an_empty_slot_the_longest_useful_prefix_is_taken(
    shared: tuple[BatchScheduler, FakeModel],
) -> None:
    sched, model = shared
    system = list(range(1, 31))
    occupy(
        sched,
        busy=[],
        cached={
            0: list(range(300, 340)),
            1: [*system, *range(200, 300)],
            2: list(range(400, 420)),
            3: list(range(500, 560)),
        },
    )
    assert place(sched, [*system, *range(600, 620)]) == (1, len(system))
    assert model.saved == [1]
