"""Student t, confidence intervals, Welch's test and the bootstrap against known values."""

from __future__ import annotations

import math
import random

import pytest

from edgellm.bench.stats import betainc, bootstrap, mean_ci, t_cdf, t_quantile, welch, wilson

# two-sided 95 % and 99 % critical values from the standard t table
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 9: 2.262, 10: 2.228, 30: 2.042}
T_995 = {1: 63.657, 4: 4.604, 10: 3.169, 120: 2.617}


@pytest.mark.parametrize(("df", "value"), sorted(T_975.items()))
def test_t_quantile_975_matches_the_table(df: int, value: float) -> None:
    assert t_quantile(0.975, df) == pytest.approx(value, abs=5e-4)
    assert t_quantile(0.025, df) == pytest.approx(-value, abs=5e-4)


@pytest.mark.parametrize(("df", "value"), sorted(T_995.items()))
def test_t_quantile_995_matches_the_table(df: int, value: float) -> None:
    assert t_quantile(0.995, df) == pytest.approx(value, abs=5e-4)


def test_t_tends_to_the_normal_and_is_symmetric() -> None:
    assert t_quantile(0.975, 1e6) == pytest.approx(1.95996, abs=1e-4)
    assert t_cdf(0.0, 7) == 0.5
    assert t_cdf(1.3, 7) + t_cdf(-1.3, 7) == pytest.approx(1.0, abs=1e-14)
    assert t_cdf(t_quantile(0.9, 3.5), 3.5) == pytest.approx(0.9, abs=1e-10)
    # df = 1 is the Cauchy distribution: closed form
    assert t_cdf(2.0, 1) == pytest.approx(0.5 + math.atan(2.0) / math.pi, abs=1e-12)


def test_incomplete_beta_closed_forms() -> None:
    assert betainc(2.5, 2.5, 0.5) == pytest.approx(0.5, abs=1e-14)
    assert betainc(1.0, 1.0, 0.3) == pytest.approx(0.3, abs=1e-14)
    assert betainc(3.0, 1.0, 0.7) == pytest.approx(0.7**3, abs=1e-14)
    assert betainc(1.0, 4.0, 0.2) == pytest.approx(1 - 0.8**4, abs=1e-14)
    with pytest.raises(ValueError, match="x must be"):
        betainc(1.0, 1.0, 1.5)


def test_against_scipy_when_it_is_installed() -> None:
    st = pytest.importorskip("scipy.stats")
    for df in (1.0, 2.5, 7.0, 40.0):
        for p in (0.6, 0.9, 0.975, 0.999):
            assert t_quantile(p, df) == pytest.approx(float(st.t.ppf(p, df)), rel=1e-9)
    rng = random.Random(1)
    a = [rng.gauss(10, 2) for _ in range(7)]
    b = [rng.gauss(12, 4) for _ in range(5)]
    ours = welch(a, b)
    theirs = st.ttest_ind(b, a, equal_var=False)
    assert ours.p_value == pytest.approx(float(theirs.pvalue), rel=1e-9)


def test_mean_ci_by_hand() -> None:
    ci = mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    half = 2.776445 * math.sqrt(2.5) / math.sqrt(5)
    assert ci.mean == 3.0 and ci.std == pytest.approx(math.sqrt(2.5))
    assert ci.low == pytest.approx(3.0 - half, abs=1e-5)
    assert ci.high == pytest.approx(3.0 + half, abs=1e-5)
    one = mean_ci([4.0, None])
    assert one.n == 1 and one.mean == 4.0 and one.low is None  # no interval from one run


def test_welch_known_example() -> None:
    # scipy.stats.ttest_ind(b, a, equal_var=False): t = 1.91108, df = 8.8711, p = 0.088782
    a = [1.0, 2.1, 2.9, 4.2, 5.0]
    b = [2.5, 3.9, 4.1, 6.0, 6.2, 7.1]
    d = welch(a, b)
    assert d.difference == pytest.approx(4.966667 - 3.04, abs=1e-5)
    assert d.p_value == pytest.approx(0.0887817, abs=1e-6)
    assert d.significant is False and d.low is not None and d.low < 0 < (d.high or 0)
    far = welch([1.0, 1.1, 0.9, 1.0], [2.0, 2.1, 1.9, 2.05])
    assert far.significant is True and far.p_value is not None and far.p_value < 1e-4
    one = welch([1.0], [2.0, 3.0])  # one run: cannot tell, but the means are known
    assert one.significant is None and one.low is None and one.p_value is None
    assert (one.method, one.mean_a, one.mean_b, one.difference) == ("welch", 1.0, 2.5, 1.5)
    assert welch([], [2.0]).difference is None


def test_bootstrap_tells_apart_only_real_differences() -> None:
    rng = random.Random(0)
    a = [rng.gauss(1.0, 0.2) for _ in range(60)]
    same = [rng.gauss(1.0, 0.2) for _ in range(60)]
    shifted = [x + 0.3 for x in same]
    assert bootstrap(a, shifted).significant is True
    assert bootstrap(a, same).significant is False
    assert bootstrap(a, same).method == "bootstrap"
    # seeded: the same answer twice
    assert bootstrap(a, same) == bootstrap(a, same)
    # four requests a side are too few to tell, however far apart
    few = bootstrap([1.0, 1.1, 0.9, 1.0], [9.0, 9.1, 8.9, 9.0])
    assert few.significant is None and few.high is None
    assert few.method == "bootstrap" and few.difference == pytest.approx(8.0)
    assert bootstrap([1.0, 1.1, 0.9, 1.0, 1.05], [9.0, 9.1, 8.9, 9.0, 9.05]).significant is True


# Wilson score intervals, 95 %: published values (Newcombe 1998, Table I: 0/10, 5/10, 81/263)
WILSON = {(0, 10): (0.0, 0.2775), (5, 10): (0.2366, 0.7634), (81, 263): (0.2553, 0.3662)}


@pytest.mark.parametrize(("kn", "bounds"), sorted(WILSON.items()))
def test_wilson_matches_published_values(kn: tuple[int, int], bounds: tuple[float, float]) -> None:
    p = wilson(*kn)
    assert p.value == kn[0] / kn[1]
    assert (p.low, p.high) == (
        pytest.approx(bounds[0], abs=1e-4),
        pytest.approx(bounds[1], abs=1e-4),
    )


def test_wilson_is_not_the_zero_width_normal_interval_at_the_edges() -> None:
    # the normal approximation gives [1, 1] for 20/20; Wilson admits a real chance of a miss
    full = wilson(20, 20)
    assert full.high == 1.0 and full.low == pytest.approx(0.8389, abs=1e-4)
    assert wilson(0, 20).low == 0.0 and wilson(0, 20).high == pytest.approx(1 - full.low)
    # more requests, narrower interval; a wider level, wider interval
    assert wilson(95, 100).high - wilson(95, 100).low < wilson(19, 20).high - wilson(19, 20).low
    assert wilson(19, 20, level=0.99).low < wilson(19, 20).low
    empty = wilson(0, 0)
    assert empty.value is None and empty.low is None
    with pytest.raises(ValueError, match="0 <= k <= n"):
        wilson(3, 2)
