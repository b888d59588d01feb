"""The timings object written into every answer: 3 decimals, as round() gives them (exact ties
aside: those go away from zero)."""

from __future__ import annotations

import math
import random

from edgellm.engine.types import Timings, _ms3


def test_three_decimals_as_round_gives_them() -> None:
    rng = random.Random(7)
    values = [rng.random() * rng.choice([1.0, 100.0, 1e5]) for _ in range(20_000)]
    values += [0.0, 0.0004, 0.0006, 78.12345, 396.92737, 1e6 / 3, -1.2344, -80.5]
    for value in values:
        assert _ms3(value) == round(value, 3), value


def test_exact_ties_round_half_away_from_zero() -> None:
    # round() rounds an exact tie to even; these are exact in binary
    assert _ms3(0.0625) == 0.063 and round(0.0625, 3) == 0.062
    assert _ms3(-0.0625) == -0.063


def test_non_finite_values_pass_through() -> None:
    assert _ms3(math.inf) == math.inf
    assert math.isnan(_ms3(math.nan))


def test_as_dict_derives_the_rates() -> None:
    t = Timings(queue_ms=1.23456, prompt_n=31, prompt_ms=78.1, predicted_n=5, predicted_ms=40.2)
    d = t.as_dict()
    assert d["queue_ms"] == 1.235
    assert d["prompt_per_token_ms"] == round(78.1 / 31, 3)
    assert d["prompt_per_second"] == round(1e3 * 31 / 78.1, 3)
    assert d["predicted_per_token_ms"] == round(40.2 / 4, 3)  # the first token came from prefill
    assert d["predicted_per_second"] == round(1e3 * 4 / 40.2, 3)
    assert Timings().as_dict()["predicted_per_token_ms"] == 0.0
