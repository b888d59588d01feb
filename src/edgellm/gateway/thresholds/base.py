"""The interface of an online threshold rule, and the registry rules add themselves to."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from edgellm.config import OnlineThresholdConfig


class ThresholdRule(Protocol):
    """Moves the cascade's threshold as answers are scored and their outcomes come in.

    `observe` sees the first tier's score of every answer the cascade judges; `learn` sees an
    outcome in [0, 1] (1: right) of an answer whose first-tier score was `score`, served by the
    first tier (`kept`) or by a higher one. State is plain JSON, so it can be written to a file
    and shown in `/v1/router`.
    """

    def threshold(self) -> float: ...

    def observe(self, score: float) -> None: ...

    def learn(self, score: float, *, kept: bool, outcome: float) -> None: ...

    def state(self) -> dict[str, Any]:
        """Everything needed to resume, as JSON values."""
        ...

    def restore(self, state: dict[str, Any]) -> None:
        """Resume from `state()`; ValueError, KeyError or TypeError if it does not fit."""
        ...

    def describe(self) -> dict[str, Any]:
        """A summary for `/v1/router` (the state without its bulk)."""
        ...


RuleFactory = Callable[[Any, float], ThresholdRule]  # (its config, the start threshold)
RULES: dict[str, RuleFactory] = {}


def register(kind: str) -> Callable[[RuleFactory], RuleFactory]:
    def add(factory: RuleFactory) -> RuleFactory:
        RULES[kind] = factory
        return factory

    return add


def make_rule(config: OnlineThresholdConfig, initial: float) -> ThresholdRule:
    return RULES[config.kind](config, initial)
