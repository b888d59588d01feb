"""A slot that saves its own conversation and restores another in one placement (found by the
fuzz suite: the save evicted the state about to be restored, the KeyError ended the scheduler
thread, and every later request waited for ever)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import pytest

from edgellm.engine.llama import LlamaModel, LlamaSettings
from edgellm.engine.scheduler import Scheduler

CONVERSATION_A = list(range(1000, 1040))  # in the slot
CONVERSATION_B = list(range(2000, 2040))  # saved earlier


@dataclass
class StateModel:
    """Sequence state save and restore, without llama.cpp."""

    settings: LlamaSettings
    n_seq_max: int = 1
    n_threads: int = 1
    restored: list[bytes] = field(default_factory=list)

    def save_seq(self, seq: int) -> bytearray:
        return bytearray(b"AAAA")

    def restore_seq(self, seq: int, state: bytearray) -> bool:
        self.restored.append(bytes(state))
        return True

    def truncate_cache(self, n_keep: int, seq: int) -> bool:
        return True

    def clear_seq(self, seq: int) -> None:
        pass


@pytest.mark.parametrize("budget", [6, 8], ids=["save-evicts-it", "both-fit"])
def test_the_saved_state_is_restored_even_when_saving_the_slot_evicts_it(budget: int) -> None:
    model = StateModel(LlamaSettings(n_seq_max=1))
    sched = Scheduler(cast(LlamaModel, model), n_slots=1, saved_state_bytes=budget, start=False)
    sched.slots[0].cached = list(CONVERSATION_A)
    sched._saved.put(CONVERSATION_B, bytearray(b"BBBB"))
    slot, n_keep = sched._place([*CONVERSATION_B, 5, 6])
    assert model.restored == [b"BBBB"]
    assert n_keep == len(CONVERSATION_B) and slot.cached == CONVERSATION_B
    assert sched._saved.best(CONVERSATION_A) == (tuple(CONVERSATION_A), len(CONVERSATION_A))
