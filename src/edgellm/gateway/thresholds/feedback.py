"""`feedback`: learn the threshold from the outcomes of answers.

P(the first tier's answer is right | its score) is an online logistic regression in the score,
updated by one Newton step per outcome with a Gaussian (Laplace) posterior, as in Bayesian
online logistic regression; past outcomes are discounted by `forgetting` so the fit follows a
drifting mix. The accuracy of escalated answers is a discounted mean. An answer is kept when the
lower confidence bound of P(right | score) (`optimism` standard errors below the estimate) is at
least the escalated accuracy minus `escalation_cost`: while the rule is unsure of a score it
escalates, as the lower-confidence-bound rules of the hierarchical-inference literature
(HI-LCB) do. The threshold is the lowest score, on a grid over the recent scores, from which on
every answer is kept.

Only outcomes of served answers exist: a kept answer's outcome teaches P(right | score), an
escalated one's the escalated accuracy. Until `min_feedback` outcomes of kept answers have come
in, the start threshold applies.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

from edgellm.config import FeedbackThresholdConfig
from edgellm.gateway.thresholds.base import register

PRIOR_PRECISION = 0.1  # a weak zero-mean prior on intercept and slope: a fit from the first outcome
GRID = 64  # candidate thresholds over the recent scores' range


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))


@register("feedback")
class FeedbackRule:
    def __init__(self, config: FeedbackThresholdConfig, initial: float) -> None:
        self.config = config
        self.initial = initial
        self.w = np.zeros(2)  # intercept, slope of logit P(right | score)
        self.precision = np.eye(2) * PRIOR_PRECISION  # of the posterior over w
        self.kept_outcomes = 0.0  # discounted counts
        self.escalated_right = 0.0
        self.escalated_n = 0.0
        self.scores: deque[float] = deque(maxlen=config.window)
        self._threshold = initial

    def threshold(self) -> float:
        return self._threshold

    def observe(self, score: float) -> None:
        if math.isfinite(score):
            self.scores.append(score)

    def learn(self, score: float, *, kept: bool, outcome: float) -> None:
        if not math.isfinite(score) or not 0.0 <= outcome <= 1.0:
            return
        g = self.config.forgetting
        if kept:
            x = np.array([1.0, score])
            p = _sigmoid(float(self.w @ x))
            # discount, keeping the prior's weight: old outcomes fade, the prior does not
            self.precision = g * self.precision + (1 - g) * np.eye(2) * PRIOR_PRECISION
            self.precision += max(p * (1 - p), 1e-6) * np.outer(x, x)
            self.w -= np.linalg.solve(self.precision, (p - outcome) * x)
            self.kept_outcomes = g * self.kept_outcomes + 1.0
        else:
            self.escalated_right = g * self.escalated_right + outcome
            self.escalated_n = g * self.escalated_n + 1.0
        self._update()

    def p_right(self, scores: np.ndarray, *, optimism: float = 0.0) -> np.ndarray:
        """P(a first-tier answer with these scores is right), `optimism` standard errors lower."""
        x = np.stack([np.ones_like(scores), scores], axis=1)
        sd = np.sqrt(np.einsum("ij,jk,ik->i", x, np.linalg.inv(self.precision), x))
        z = np.clip(x @ self.w - optimism * sd, -50.0, 50.0)
        return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=np.float64)

    @property
    def escalated_accuracy(self) -> float:
        """With a Beta(1, 1) prior: one half before any escalated answer is rated."""
        return (self.escalated_right + 1.0) / (self.escalated_n + 2.0)

    def _update(self) -> None:
        if self.kept_outcomes < self.config.min_feedback or not self.scores:
            self._threshold = self.initial
            return
        need = self.escalated_accuracy - self.config.escalation_cost
        lo, hi = min(self.scores), max(self.scores)
        grid = np.linspace(lo, hi, GRID) if hi > lo else np.array([lo])
        keep = self.p_right(grid, optimism=self.config.optimism) >= need
        threshold = float(np.nextafter(hi, math.inf))  # none kept: escalate every answer
        for s, ok in zip(grid[::-1], keep[::-1], strict=True):
            if not ok:
                break
            threshold = float(s)
        self._threshold = threshold

    def state(self) -> dict[str, Any]:
        return {
            "w": self.w.tolist(),
            "precision": self.precision.tolist(),
            "kept_outcomes": self.kept_outcomes,
            "escalated_right": self.escalated_right,
            "escalated_n": self.escalated_n,
            "scores": list(self.scores),
        }

    def restore(self, state: dict[str, Any]) -> None:
        w = np.array(state["w"], dtype=np.float64)
        precision = np.array(state["precision"], dtype=np.float64)
        scores = [float(s) for s in state["scores"]]
        numbers = [float(state[k]) for k in ("kept_outcomes", "escalated_right", "escalated_n")]
        if w.shape != (2,) or precision.shape != (2, 2):
            raise ValueError("the weights do not have the shapes of a one-score model")
        if not (np.isfinite(w).all() and np.isfinite(precision).all()):
            raise ValueError("non-finite weights")
        if np.linalg.det(precision) <= 0 or min(numbers) < 0 or numbers[1] > numbers[2]:
            raise ValueError("not a valid posterior")
        self.w, self.precision = w, precision
        self.kept_outcomes, self.escalated_right, self.escalated_n = numbers
        self.scores.clear()
        self.scores.extend(s for s in scores if math.isfinite(s))
        self._update()

    def describe(self) -> dict[str, Any]:
        return {
            "escalation_cost": self.config.escalation_cost,
            "outcomes_kept": round(self.kept_outcomes, 2),
            "outcomes_escalated": round(self.escalated_n, 2),
            "logit_p_right": [round(float(v), 4) for v in self.w],  # intercept, slope
            "escalated_accuracy": round(self.escalated_accuracy, 4),
            "learning": self.kept_outcomes >= self.config.min_feedback,
        }
