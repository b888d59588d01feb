"""Accuracy with its uncertainty."""

from __future__ import annotations

import math

from pydantic import BaseModel

Z95 = 1.959963984540054


class Accuracy(BaseModel):
    correct: int
    n: int
    accuracy: float
    stderr: float
    """sqrt(p(1-p)/(n-1)), what llama.cpp prints as "+/-" (as a fraction, not percent)."""
    ci95_low: float
    ci95_high: float
    """Wilson score interval: stays inside [0, 1] and behaves for small n."""


def accuracy(correct: int, n: int) -> Accuracy:
    if n <= 0:
        return Accuracy(correct=0, n=0, accuracy=0.0, stderr=0.0, ci95_low=0.0, ci95_high=1.0)
    p = correct / n
    stderr = math.sqrt(p * (1 - p) / (n - 1)) if n > 1 else 0.0
    z2 = Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return Accuracy(
        correct=correct,
        n=n,
        accuracy=p,
        stderr=stderr,
        ci95_low=max(0.0, centre - half),
        ci95_high=min(1.0, centre + half),
    )
