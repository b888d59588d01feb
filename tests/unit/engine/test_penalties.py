"""Repetition penalties on a logits row: OpenAI's formula for presence and frequency (answer
tokens only), llama.cpp's for the repeat penalty (prompt and answer, a window)."""

from __future__ import annotations

import numpy as np
import pytest

from edgellm.engine.penalties import Penalties, PenaltySettings
from edgellm.errors import InvalidRequestError


def _row() -> np.ndarray:
    return np.array([2.0, -2.0, 1.0, 0.5, -1.0, 3.0], dtype=np.float32)


def test_neutral_settings_are_not_active() -> None:
    assert not PenaltySettings().active
    assert not PenaltySettings(repeat=1.3, repeat_last_n=0).active
    assert PenaltySettings(presence=0.1).active
    assert PenaltySettings(frequency=-0.5).active
    assert PenaltySettings(repeat=1.1).active


def test_presence_and_frequency_follow_openais_formula() -> None:
    p = Penalties(PenaltySettings(presence=0.5, frequency=0.25), prompt=[0, 1, 2])
    for token in (3, 3, 3, 5):
        p.accept(token)
    row = _row()
    out = p.apply(row)
    # token 3 three times: 0.5 - (0.25 * 3 + 0.5); token 5 once: 3 - (0.25 + 0.5)
    assert out[3] == pytest.approx(0.5 - 1.25)
    assert out[5] == pytest.approx(3.0 - 0.75)
    # the prompt's tokens and tokens never produced are untouched
    np.testing.assert_array_equal(out[[0, 1, 2, 4]], row[[0, 1, 2, 4]])
    np.testing.assert_array_equal(row, _row())  # the model's row itself is left alone


def test_negative_presence_raises_the_logit() -> None:
    p = Penalties(PenaltySettings(presence=-1.0), prompt=[])
    p.accept(4)
    assert p.apply(_row())[4] == pytest.approx(0.0)


def test_repeat_penalty_divides_positive_and_multiplies_negative_logits() -> None:
    p = Penalties(PenaltySettings(repeat=2.0, repeat_last_n=3), prompt=[5, 0, 1, 1])
    out = p.apply(_row())
    # the window holds the prompt's last three tokens: 0, 1, 1 (counted once)
    assert out[0] == pytest.approx(1.0)
    assert out[1] == pytest.approx(-4.0)
    assert out[5] == pytest.approx(3.0)  # left the window
    p.accept(2)  # pushes 0 out of the window
    out = p.apply(_row())
    assert out[0] == pytest.approx(2.0)
    assert out[2] == pytest.approx(0.5)


def test_repeat_window_of_minus_one_covers_everything_and_zero_nothing() -> None:
    whole = Penalties(PenaltySettings(repeat=2.0, repeat_last_n=-1), prompt=[5, 0])
    for _ in range(100):
        whole.accept(3)
    assert whole.apply(_row())[5] == pytest.approx(1.5)
    none = Penalties(PenaltySettings(repeat=2.0, repeat_last_n=0), prompt=[5, 0])
    none.accept(3)
    np.testing.assert_array_equal(none.apply(_row()), _row())


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        (PenaltySettings(repeat=5e-324), "repeat_penalty"),  # float32 0: logits / 0 = inf, NaN
        (PenaltySettings(repeat=0.009), "repeat_penalty"),
        (PenaltySettings(repeat=11.0), "repeat_penalty"),
        (PenaltySettings(presence=float("nan")), "presence_penalty"),
        (PenaltySettings(frequency=-2.5), "frequency_penalty"),
        (PenaltySettings(repeat_last_n=-2), "repeat_last_n"),
    ],
)
def test_values_that_would_break_the_logits_are_refused(
    settings: PenaltySettings, field: str
) -> None:
    with pytest.raises(InvalidRequestError) as err:
        settings.check()
    assert err.value.param == field


def test_the_bounds_keep_every_penalised_logit_finite() -> None:
    PenaltySettings(presence=2.0, frequency=-2.0, repeat=0.01, repeat_last_n=-1).check()
    row = np.array([60.0, -60.0, 0.0, 1e-3], dtype=np.float32)  # logits of a real model: |x| < 100
    p = Penalties(PenaltySettings(presence=2.0, frequency=2.0, repeat=0.01, repeat_last_n=-1), [])
    for token in (0, 1, 2, 3) * 50:
        p.accept(token)
    assert np.isfinite(p.apply(row)).all()
