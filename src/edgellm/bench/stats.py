"""Confidence intervals and significance tests for repeated runs, without scipy.

scipy is not a direct dependency of EdgeLLM, so Student's t distribution is computed here:
its CDF through the regularized incomplete beta function I_x(a, b) (Lentz's continued fraction,
as in Numerical Recipes §6.4), its quantile by bisection on the CDF (monotonic, so bisection
to 1e-12 is exact enough and cannot diverge). Tested against published table values.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from statistics import NormalDist

from pydantic import BaseModel


def _betacf(a: float, b: float, x: float) -> float:
    tiny, eps = 1e-300, 3e-16
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if not 0.0 <= x <= 1.0:
        raise ValueError("x must be in [0, 1]")
    if x in (0.0, 1.0):
        return x
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    # the continued fraction converges fast for x < (a + 1) / (a + b + 2); use the symmetry
    # I_x(a, b) = 1 - I_{1-x}(b, a) on the other side
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` degrees of freedom."""
    if df <= 0:
        raise ValueError("degrees of freedom must be positive")
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p."""
    if not 0.0 < p < 1.0:
        raise ValueError("p must be in (0, 1)")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2.0
    for _ in range(200):
        mid = (low + high) / 2.0
        if t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
        if high - low < 1e-12 * max(1.0, high):
            break
    return (low + high) / 2.0


class MeanCI(BaseModel):
    n: int
    mean: float | None
    std: float | None
    low: float | None
    high: float | None
    """Student t interval for the mean (None below two values)."""
    level: float = 0.95


def mean_ci(values: Sequence[float | None], level: float = 0.95) -> MeanCI:
    data = [float(v) for v in values if v is not None]
    n = len(data)
    if n == 0:
        return MeanCI(n=0, mean=None, std=None, low=None, high=None, level=level)
    mean = sum(data) / n
    if n < 2:
        return MeanCI(n=1, mean=mean, std=None, low=None, high=None, level=level)
    std = math.sqrt(sum((x - mean) ** 2 for x in data) / (n - 1))
    half = t_quantile(0.5 + level / 2.0, n - 1) * std / math.sqrt(n)
    return MeanCI(n=n, mean=mean, std=std, low=mean - half, high=mean + half, level=level)


class Proportion(BaseModel):
    k: int
    n: int
    value: float | None
    low: float | None
    high: float | None
    """Wilson score interval (None when n is 0)."""
    level: float = 0.95


def wilson(k: int, n: int, level: float = 0.95) -> Proportion:
    """A proportion k/n with its Wilson score interval: it stays inside [0, 1], is not empty
    at 0/n or n/n (where the normal approximation gives a zero-width interval), and covers
    close to the nominal level for small n (Brown, Cai & DasGupta 2001)."""
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return Proportion(k=0, n=0, value=None, low=None, high=None, level=level)
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    p = k / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # at k = 0 (or n) the bound is exactly 0 (or 1); clamp the rounding
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return Proportion(k=k, n=n, value=p, low=low, high=high, level=level)


class Difference(BaseModel):
    method: str
    """`welch` (t-test on per-run values) or `bootstrap` (resampled per-request values)."""
    n_a: int
    n_b: int
    mean_a: float | None
    mean_b: float | None
    difference: float | None
    """mean_b - mean_a"""
    low: float | None
    high: float | None
    """95 % interval of the difference."""
    p_value: float | None
    significant: bool | None
    """At the 5 % level; None when there are too few values to tell."""


def _untested(method: str, a: Sequence[float], b: Sequence[float]) -> Difference:
    """The means and their difference, with no interval or test: too few values for `method`."""
    ma = sum(a) / len(a) if a else None
    mb = sum(b) / len(b) if b else None
    diff = mb - ma if ma is not None and mb is not None else None
    return Difference(
        method=method, n_a=len(a), n_b=len(b), mean_a=ma, mean_b=mb, difference=diff,
        low=None, high=None, p_value=None, significant=None,
    )  # fmt: skip


def welch(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Difference:
    """Welch's unequal-variance t-test (two-sided) and interval for mean(b) - mean(a)."""
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        return _untested("welch", a, b)
    ma, mb = sum(a) / na, sum(b) / nb
    va = sum((x - ma) ** 2 for x in a) / (na - 1)
    vb = sum((x - mb) ** 2 for x in b) / (nb - 1)
    se2 = va / na + vb / nb
    diff = mb - ma
    if se2 == 0:
        same = diff == 0
        return Difference(
            method="welch", n_a=na, n_b=nb, mean_a=ma, mean_b=mb, difference=diff,
            low=diff, high=diff, p_value=1.0 if same else 0.0, significant=not same,
        )  # fmt: skip
    df = se2**2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
    t = diff / math.sqrt(se2)
    p = 2.0 * (1.0 - t_cdf(abs(t), df))
    half = t_quantile(0.5 + level / 2.0, df) * math.sqrt(se2)
    return Difference(
        method="welch", n_a=na, n_b=nb, mean_a=ma, mean_b=mb, difference=diff,
        low=diff - half, high=diff + half, p_value=p, significant=p < 1.0 - level,
    )  # fmt: skip


MIN_BOOTSTRAP = 5
"""Fewer values than this have too few distinct resamples for the percentiles to mean much."""


def bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    *,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> Difference:
    """Percentile bootstrap of mean(b) - mean(a) over per-request values (seeded).

    Significant when the interval excludes 0; the p-value is the two-sided share of resampled
    differences on the other side of 0 (doubled, at most 1).
    """
    na, nb = len(a), len(b)
    if na < MIN_BOOTSTRAP or nb < MIN_BOOTSTRAP:
        return _untested("bootstrap", a, b)
    rng = random.Random(seed)
    ma, mb = sum(a) / na, sum(b) / nb
    diffs = sorted(
        sum(rng.choices(b, k=nb)) / nb - sum(rng.choices(a, k=na)) / na for _ in range(resamples)
    )
    alpha = 1.0 - level
    low = diffs[math.floor(alpha / 2 * (resamples - 1))]
    high = diffs[math.ceil((1 - alpha / 2) * (resamples - 1))]
    below = sum(1 for d in diffs if d <= 0) / resamples
    above = sum(1 for d in diffs if d >= 0) / resamples
    p = min(1.0, 2.0 * min(below, above))
    return Difference(
        method="bootstrap", n_a=na, n_b=nb, mean_a=ma, mean_b=mb, difference=mb - ma,
        low=low, high=high, p_value=p, significant=not low <= 0.0 <= high,
    )  # fmt: skip
