"""Accuracy with its uncertainty."""

from __future__ import annotations

import math

from pydantic import BaseModel

from edgellm.bench.stats import wilson


class Accuracy(BaseModel):
    correct: int
    n: int
    accuracy: float
    stderr: float
    """sqrt(p(1-p)/(n-1)), what llama.cpp prints as "+/-" (as a fraction, not percent)."""
    ci95_low: float
    ci95_high: float
    """Wilson score interval (`bench.stats.wilson`): stays inside [0, 1] and behaves for small n."""


def accuracy(correct: int, n: int) -> Accuracy:
    if n <= 0:
        return Accuracy(correct=0, n=0, accuracy=0.0, stderr=0.0, ci95_low=0.0, ci95_high=1.0)
    p = correct / n
    stderr = math.sqrt(p * (1 - p) / (n - 1)) if n > 1 else 0.0
    interval = wilson(correct, n)
    assert interval.low is not None and interval.high is not None  # n > 0
    return Accuracy(
        correct=correct,
        n=n,
        accuracy=p,
        stderr=stderr,
        ci95_low=interval.low,
        ci95_high=interval.high,
    )
