"""Confidence of an answer from its tokens' log-probs, for the cascade.

Features: mean log-prob, minimum log-prob, mean entropy (from the top alternatives, with the rest
of the probability mass as one more outcome, so it is a lower bound). Scorers map features to a
score where higher means more confident; they are registered by name.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from edgellm.config import ScorerConfig
from edgellm.engine.types import TokenLogprob
from edgellm.errors import EdgeLLMError

FEATURES = ("mean_logprob", "min_logprob", "mean_entropy", "n_tokens")


@dataclass(frozen=True, slots=True)
class Confidence:
    mean_logprob: float
    min_logprob: float
    mean_entropy: float
    n_tokens: int

    def vector(self, names: Sequence[str] = FEATURES) -> list[float]:
        values = asdict(self)
        return [float(values[n]) for n in names]


def token_entropy(lp: TokenLogprob) -> float:
    if not lp.top:
        return -lp.logprob  # surprisal of the chosen token: the best we know without alternatives
    probs = [math.exp(t.logprob) for t in lp.top]
    rest = max(0.0, 1.0 - sum(probs))
    return -sum(p * math.log(p) for p in [*probs, rest] if p > 0)


def confidence(logprobs: Sequence[TokenLogprob]) -> Confidence | None:
    if not logprobs:
        return None
    values = [lp.logprob for lp in logprobs]
    return Confidence(
        mean_logprob=sum(values) / len(values),
        min_logprob=min(values),
        mean_entropy=sum(token_entropy(lp) for lp in logprobs) / len(logprobs),
        n_tokens=len(values),
    )


class Scorer(Protocol):
    def score(self, c: Confidence) -> float: ...


class _Feature:
    def __init__(self, fn: Callable[[Confidence], float]) -> None:
        self._fn = fn

    def score(self, c: Confidence) -> float:
        return self._fn(c)


class LogisticScorer:
    """P(answer correct) from a logistic regression over the features, trained on eval outcomes
    (`edgellm router train --kind cascade`)."""

    def __init__(self, features: list[str], coef: list[float], intercept: float) -> None:
        if len(features) != len(coef) or any(f not in FEATURES for f in features):
            raise EdgeLLMError(f"scorer weights do not match the features {FEATURES}")
        self.features, self.coef, self.intercept = features, coef, intercept

    @classmethod
    def load(cls, path: Path) -> LogisticScorer:
        try:
            data = json.loads(path.read_text())
            return cls(list(data["features"]), list(data["coef"]), float(data["intercept"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise EdgeLLMError(f"cannot load cascade scorer {path}: {exc}") from exc

    def save(self, path: Path) -> None:
        body = {"features": self.features, "coef": self.coef, "intercept": self.intercept}
        path.write_text(json.dumps(body, indent=1))

    def score(self, c: Confidence) -> float:
        z = self.intercept + sum(
            w * x for w, x in zip(self.coef, c.vector(self.features), strict=False)
        )
        return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))


SCORERS: dict[str, Callable[[ScorerConfig], Scorer]] = {
    "mean_logprob": lambda _: _Feature(lambda c: c.mean_logprob),
    "min_logprob": lambda _: _Feature(lambda c: c.min_logprob),
    "neg_entropy": lambda _: _Feature(lambda c: -c.mean_entropy),
}


def _logistic(cfg: ScorerConfig) -> Scorer:
    if cfg.path is None:
        raise EdgeLLMError("the logistic scorer needs `path` (from `edgellm router train`)")
    return LogisticScorer.load(cfg.path)


SCORERS["logistic"] = _logistic


def make_scorer(cfg: ScorerConfig) -> Scorer:
    factory = SCORERS.get(cfg.kind)
    if factory is None:
        raise EdgeLLMError(f"unknown scorer {cfg.kind!r}; known: {', '.join(sorted(SCORERS))}")
    return factory(cfg)
