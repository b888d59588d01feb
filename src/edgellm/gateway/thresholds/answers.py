"""The cascade's decisions by answer id, for outcomes reported later (`POST /v1/feedback`).

Bounded twice: at most `capacity` answers (the oldest go first) and each for `ttl_s` seconds.
An answer takes one outcome: it is forgotten when rated.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Decision:
    score: float  # the first tier's confidence score
    threshold: float  # the threshold it was compared with
    escalations: list[dict[str, Any]]  # the route's escalations, filled in as it proceeds
    at: float  # monotonic time of the decision

    @property
    def escalated(self) -> bool:
        return self.score < self.threshold

    @property
    def kept(self) -> bool:
        """Whether the first tier's answer was served: not escalated, or every higher tier
        failed to answer (a degraded answer)."""
        return not self.escalated or not any(
            e.get("outcome") == "answered" for e in self.escalations
        )


class Answers:
    def __init__(
        self, capacity: int, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.capacity = capacity
        self.ttl_s = ttl_s
        self.clock = clock
        self._by_id: OrderedDict[str, Decision] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, answer_id: str) -> Decision | None:
        return self._by_id.get(answer_id)

    def record(self, answer_id: str, decision: Decision) -> None:
        if self.capacity == 0:
            return
        self._by_id[answer_id] = decision
        self._by_id.move_to_end(answer_id)
        self._expire(decision.at)
        while len(self._by_id) > self.capacity:
            self._by_id.popitem(last=False)

    def pop(self, answer_id: str) -> Decision | None:
        """The decision for this answer, forgotten as it is returned; None if unknown, expired
        or already rated."""
        self._expire(self.clock())
        return self._by_id.pop(answer_id, None)

    def _expire(self, now: float) -> None:
        # insertion order is decision order, so expired answers are at the front
        while self._by_id:
            oldest = next(iter(self._by_id.values()))
            if now - oldest.at <= self.ttl_s:
                break
            self._by_id.popitem(last=False)
