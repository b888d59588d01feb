"""`target_rate`: escalate a fixed fraction of answers, whatever the mix of requests.

The threshold is the `rate` quantile of the last `window` first-tier scores (an online
quantile): when the mix of requests drifts and its scores with it, the threshold follows within
one window, and the realised escalation rate returns to the target. Until `min_samples` scores
have been seen the start threshold (the offline calibration) applies.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from typing import Any

from edgellm.config import TargetRateThresholdConfig
from edgellm.gateway.thresholds.base import register


@register("target_rate")
class TargetRateRule:
    def __init__(self, config: TargetRateThresholdConfig, initial: float) -> None:
        self.config = config
        self.initial = initial
        self.scores: deque[float] = deque(maxlen=config.window)
        self.escalated: deque[bool] = deque(maxlen=config.window)  # what each score decided
        self._sorted: list[float] = []  # the window's scores in order: O(window) per update
        self._threshold = initial

    def threshold(self) -> float:
        return self._threshold

    def observe(self, score: float) -> None:
        if not math.isfinite(score):
            return
        self.escalated.append(score < self._threshold)
        if len(self.scores) == self.scores.maxlen:
            del self._sorted[bisect.bisect_left(self._sorted, self.scores[0])]
        self.scores.append(score)
        bisect.insort(self._sorted, score)
        self._update()

    def learn(self, score: float, *, kept: bool, outcome: float) -> None:
        """Outcomes do not move a rate target."""

    def _update(self) -> None:
        values = self._sorted
        if len(values) < self.config.min_samples:
            self._threshold = self.initial
            return
        # the midpoint between the k-th and (k+1)-th lowest scores: exactly k = rate * n of
        # the window's scores fall below it (as `edgellm router train` calibrates)
        k = round(self.config.rate * len(values))
        if k <= 0:
            self._threshold = values[0]
        elif k >= len(values):
            self._threshold = math.nextafter(values[-1], math.inf)
        else:
            self._threshold = (values[k - 1] + values[k]) / 2

    def state(self) -> dict[str, Any]:
        return {"scores": list(self.scores), "escalated": list(self.escalated)}

    def restore(self, state: dict[str, Any]) -> None:
        scores = [float(s) for s in state["scores"]]
        escalated = [bool(e) for e in state["escalated"]]
        if len(scores) != len(escalated) or not all(math.isfinite(s) for s in scores):
            raise ValueError("scores and decisions do not match")
        self.scores.clear()
        self.escalated.clear()
        self.scores.extend(scores)
        self.escalated.extend(escalated)
        self._sorted = sorted(self.scores)
        self._update()

    def describe(self) -> dict[str, Any]:
        n = len(self.escalated)
        return {
            "target_rate": self.config.rate,
            "window": self.config.window,
            "scores_seen": n,
            "realised_rate": round(sum(self.escalated) / n, 4) if n else None,
        }
