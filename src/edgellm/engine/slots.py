"""Slots and their caches: which slot a new request takes, and the saved states of evicted ones.

Plain data and decisions, no llama.cpp and no thread: the scheduler carries a `Placement` out on
the model (save, restore, truncate), and the tests check the decisions directly.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edgellm.engine.jobs import ScoringJob, common_prefix_len

if TYPE_CHECKING:
    from edgellm.engine.generation import ActiveGeneration

MIN_SAVED_TOKENS = 32  # shorter caches are cheaper to prefill again than to save
MIN_REUSED_TOKENS = 16  # a shared prefix shorter than this is not worth another slot's cache


@dataclass(slots=True)
class Slot:
    seq: int  # the llama.cpp sequence id
    cached: list[int] = field(default_factory=list)  # tokens whose KV sits in this sequence
    last_used: float = 0.0
    gen: ActiveGeneration | None = None
    scoring: ScoringJob | None = None
    order: int = 0  # admission order, for fair prefill

    @property
    def busy(self) -> bool:
        return self.gen is not None or self.scoring is not None


class SavedStates:
    """An LRU of saved sequence states, bounded in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[int, ...], bytearray] = OrderedDict()
        self._bytes = 0

    def put(self, tokens: list[int], state: bytearray) -> None:
        if len(state) > self.max_bytes:
            return
        key = tuple(tokens)
        if key in self._items:
            self._bytes -= len(self._items.pop(key))
        self._items[key] = state
        self._bytes += len(state)
        while self._bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self._bytes -= len(old)

    def best(self, prompt: list[int]) -> tuple[tuple[int, ...], int] | None:
        """The saved token sequence sharing the longest prefix with `prompt`, and that length."""
        best: tuple[tuple[int, ...], int] | None = None
        for key in self._items:
            n = common_prefix_len(key, prompt)
            if n and (best is None or n > best[1]):
                best = (key, n)
        return best

    def get(self, key: tuple[int, ...]) -> bytearray:
        """The state saved for `key` (kept, and marked most recently used)."""
        self._items.move_to_end(key)
        return self._items[key]

    @property
    def n_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a prompt goes and what happens to that slot's cache first."""

    slot: Slot
    n_keep: int  # cached tokens of the prompt that need no prefill
    save_current: bool  # save the slot's cache (another conversation's) before it is cut
    restore: tuple[int, ...] | None = None  # restore this saved state into the slot first


def choose_slot(
    slots: Sequence[Slot],
    tokens: list[int],
    *,
    saved: SavedStates,
    kv_unified: bool,
) -> Placement:
    """Pick a free slot for `tokens` (at least one of `slots` must be free).

    The slot holding this conversation wins: its cache is mostly a prefix of the prompt.
    Otherwise nobody's conversation is displaced if an empty slot is free (a shared system prompt
    alone is not worth another conversation's cache); failing that, the slot with the longest
    useful prefix, then the shortest, least recently used cache. With per-slot cells, keeping the
    busy slots contiguous comes first among those (llama.cpp evaluates consecutive sequence ids
    per micro-batch). A saved state with a longer prefix is restored into the chosen slot.
    """
    free = [s for s in slots if not s.busy]
    limit = len(tokens) - 1  # the last prompt token is always evaluated for fresh logits
    prefix = {s.seq: min(common_prefix_len(s.cached, tokens), limit) for s in free}
    slot = max(free, key=lambda s: (prefix[s.seq], -s.last_used))
    n_keep = prefix[slot.seq]
    lost = len(slot.cached) - n_keep
    if n_keep < MIN_REUSED_TOKENS or (lost >= MIN_SAVED_TOKENS and n_keep < lost):

        def useful(s: Slot) -> int:
            return prefix[s.seq] if prefix[s.seq] >= MIN_REUSED_TOKENS else 0

        def runs(s: Slot) -> int:
            return 0 if kv_unified else busy_runs(slots, s)

        slot = min(
            free,
            key=lambda s: (runs(s), bool(s.cached), -useful(s), len(s.cached), s.last_used),
        )
        n_keep = prefix[slot.seq]
    best = saved.best(tokens)
    if best is not None and min(best[1], limit) >= max(n_keep + 1, MIN_REUSED_TOKENS):
        return Placement(slot, min(best[1], limit), save_current=True, restore=best[0])
    return Placement(slot, n_keep, save_current=len(slot.cached) - n_keep >= MIN_SAVED_TOKENS)


def busy_runs(slots: Sequence[Slot], candidate: Slot) -> int:
    """Runs of consecutive busy sequence ids if `candidate` were busy too (per-slot cells).

    llama.cpp splits a batch over per-slot cells into micro-batches of consecutive ids, so each
    extra run costs another pass over the weights in every decode step.
    """
    busy = [s.busy or s is candidate for s in sorted(slots, key=lambda s: s.seq)]
    return sum(1 for i, b in enumerate(busy) if b and (i == 0 or not busy[i - 1]))
