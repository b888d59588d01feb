"""Server-side conversation history (`conversation_id`), trimmed to the chosen model's window.

Trimming drops the oldest turns and always keeps the system prompt and the newest user turn.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

Message = dict[str, Any]


class Conversations:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, list[Message]] = OrderedDict()
        self._lock = threading.Lock()

    def merge(self, conversation_id: str, new: list[Message]) -> list[Message]:
        """The stored history followed by the new turns (a new system message replaces the old)."""
        with self._lock:
            history = list(self._items.get(conversation_id, []))
        if any(m.get("role") in {"system", "developer"} for m in new):
            history = [m for m in history if m.get("role") not in {"system", "developer"}]
        system = [m for m in new if m.get("role") in {"system", "developer"}]
        rest = [m for m in new if m.get("role") not in {"system", "developer"}]
        old_system = [m for m in history if m.get("role") in {"system", "developer"}]
        old_rest = [m for m in history if m.get("role") not in {"system", "developer"}]
        return [*(system or old_system), *old_rest, *rest]

    def record(self, conversation_id: str, messages: list[Message], reply: str) -> None:
        if self.capacity <= 0:
            return
        with self._lock:
            self._items[conversation_id] = [*messages, {"role": "assistant", "content": reply}]
            self._items.move_to_end(conversation_id)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def get(self, conversation_id: str) -> list[Message]:
        with self._lock:
            return list(self._items.get(conversation_id, []))


def trim(
    messages: list[Message], budget: int, count: Callable[[list[Message]], int]
) -> list[Message]:
    """Drop the oldest non-system turns until `count(messages) <= budget` (or only the system
    prompt and the last turn are left)."""
    kept = list(messages)
    while count(kept) > budget:
        droppable = [
            i for i, m in enumerate(kept[:-1]) if m.get("role") not in {"system", "developer"}
        ]
        if not droppable:
            break
        del kept[droppable[0]]
    return kept


def estimate_tokens(messages: list[Message]) -> int:
    """About 4 characters per token plus a few per message for the chat template."""
    return sum(len(str(m.get("content") or "")) // 4 + 4 for m in messages)
