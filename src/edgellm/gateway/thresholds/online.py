"""A cascade's online threshold: its rule, the answers it may still hear about, its state file."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgellm.config import OnlineThresholdConfig
from edgellm.gateway.thresholds.answers import Answers, Decision
from edgellm.gateway.thresholds.base import make_rule
from edgellm.gateway.thresholds.state import load_state, save_state

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Rated:
    """What an outcome was recorded against."""

    score: float
    threshold: float
    escalated: bool
    kept: bool
    outcome: float
    threshold_now: float


class OnlineThreshold:
    def __init__(
        self,
        config: OnlineThresholdConfig,
        initial: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.kind = config.kind
        self.rule = make_rule(config, initial)
        self.answers = Answers(config.answers, config.answer_ttl_s, clock)
        self.clock = clock
        self.outcomes = 0
        self.decisions = 0
        self._dirty = False
        self._saved_at = -math.inf
        path = config.state_path
        saved = load_state(path, self.kind) if path is not None else None
        if saved is not None:
            try:
                self.rule.restore(saved)
                log.info("threshold state restored from %s", path)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("threshold state %s does not fit the rule (%s); starting afresh",
                            path, exc)  # fmt: skip

    def threshold(self) -> float:
        return self.rule.threshold()

    def decided(
        self, answer_id: str, score: float, threshold: float, escalations: list[dict[str, Any]]
    ) -> None:
        """The cascade compared an answer's score with `threshold`. Only a route's first scored
        answer counts (the one the escalation rate is about); `escalations` is the route's own
        list, which tells, when an outcome arrives, whether that answer was the one served."""
        known = self.answers.get(answer_id)
        if known is not None and known.escalations is escalations:
            return  # a higher tier's score within the same route
        self.decisions += 1
        self.rule.observe(score)
        self.answers.record(answer_id, Decision(score, threshold, escalations, self.clock()))
        self._changed()

    def rate(self, answer_id: str, outcome: float) -> Rated | None:
        """Learn from an answer's outcome (1: right, 0: wrong); None if the answer is unknown,
        expired or already rated."""
        decision = self.answers.pop(answer_id)
        if decision is None:
            return None
        self.outcomes += 1
        self.rule.learn(decision.score, kept=decision.kept, outcome=outcome)
        self._changed()
        return Rated(decision.score, decision.threshold, decision.escalated, decision.kept,
                     outcome, self.threshold())  # fmt: skip

    def _changed(self) -> None:
        self._dirty = True
        if self.clock() - self._saved_at >= self.config.save_interval_s:
            self.save()

    def save(self) -> None:
        """Write the state file now if anything changed (errors are logged: a full or read-only
        disk must not fail requests)."""
        path = self.config.state_path
        if path is None or not self._dirty:
            return
        self._saved_at = self.clock()
        try:
            save_state(path, self.kind, self.rule.state())
            self._dirty = False
        except OSError as exc:
            log.warning("cannot write threshold state %s: %s", path, exc)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "threshold": round(self.threshold(), 6),
            "decisions": self.decisions,
            "outcomes": self.outcomes,
            "answers_remembered": len(self.answers),
            "state_file": str(self.config.state_path) if self.config.state_path else None,
            **self.rule.describe(),
        }
