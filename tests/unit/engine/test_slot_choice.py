"""Which slot a new request takes: `choose_slot` is a plain decision over slots and saved
states, checked here without llama.cpp or a scheduler."""

from __future__ import annotations

from edgellm.engine.jobs import ScoringJob
from edgellm.engine.slots import Placement, SavedStates, Slot, choose_slot


def table(busy: list[int], cached: dict[int, list[int]], n: int = 4) -> list[Slot]:
    slots = [Slot(seq=i, cached=list(cached.get(i, []))) for i in range(n)]
    for slot in slots:
        if slot.seq in busy:  # any job makes a slot busy; a scoring job needs no model
            slot.scoring = ScoringJob(requests=[], future=None)  # type: ignore[arg-type]
    return slots


def place(
    slots: list[Slot],
    prompt: list[int],
    *,
    kv_unified: bool,
    saved: SavedStates | None = None,
) -> Placement:
    return choose_slot(slots, prompt, saved=saved or SavedStates(1 << 20), kv_unified=kv_unified)


def test_per_slot_cells_keep_busy_slots_contiguous() -> None:
    # Slots 0 and 1 decode; slot 2 holds another conversation, slot 3 is empty. Taking slot 3
    # would split every decode step into two micro-batches ({0, 1} and {3}).
    slots = table(busy=[0, 1], cached={2: list(range(100, 140))})
    plan = place(slots, list(range(500, 520)), kv_unified=False)
    assert (plan.slot.seq, plan.n_keep) == (2, 0)
    assert plan.save_current  # the displaced conversation is kept aside, not lost


def test_shared_cells_take_the_emptiest_slot() -> None:
    slots = table(busy=[0, 1], cached={2: list(range(100, 140))})
    plan = place(slots, list(range(500, 520)), kv_unified=True)
    assert (plan.slot.seq, plan.n_keep, plan.save_current) == (3, 0, False)


def test_a_cached_prefix_wins_over_contiguity() -> None:
    conversation = list(range(100, 140))
    slots = table(busy=[0, 1], cached={3: conversation})
    plan = place(slots, [*conversation, 7, 8], kv_unified=False)
    assert (plan.slot.seq, plan.n_keep, plan.save_current) == (3, len(conversation), False)


def test_the_last_prompt_token_is_never_reused() -> None:
    conversation = list(range(100, 140))
    slots = table(busy=[], cached={0: conversation})
    plan = place(slots, conversation, kv_unified=True)  # the same prompt again
    assert (plan.slot.seq, plan.n_keep) == (0, len(conversation) - 1)


def test_a_shared_system_prompt_does_not_displace_a_conversation() -> None:
    system = list(range(1, 31))  # 30 tokens every conversation starts with
    slots = table(busy=[], cached={0: [*system, *range(200, 300)]})
    plan = place(slots, [*system, *range(600, 620)], kv_unified=True)
    assert (plan.slot.seq, plan.n_keep, plan.save_current) == (1, 0, False)


def test_without_an_empty_slot_the_longest_useful_prefix_is_taken() -> None:
    system = list(range(1, 31))
    slots = table(
        busy=[],
        cached={
            0: list(range(300, 340)),
            1: [*system, *range(200, 300)],
            2: list(range(400, 420)),
            3: list(range(500, 560)),
        },
    )
    plan = place(slots, [*system, *range(600, 620)], kv_unified=True)
    assert (plan.slot.seq, plan.n_keep, plan.save_current) == (1, len(system), True)


def test_a_saved_state_with_a_longer_prefix_is_restored() -> None:
    conversation = list(range(100, 160))
    saved = SavedStates(1 << 20)
    saved.put(conversation, bytearray(b"state"))
    slots = table(busy=[], cached={0: list(range(300, 340))}, n=1)
    plan = place(slots, [*conversation, 5], kv_unified=True, saved=saved)
    assert plan.restore == tuple(conversation) and plan.n_keep == len(conversation)
    assert plan.save_current  # the slot's own conversation is saved before the restore
    # a saved state sharing less than the slot's own cache is not restored
    plan = place(slots, [*range(300, 340), 5], kv_unified=True, saved=saved)
    assert plan.restore is None and plan.n_keep == 40
