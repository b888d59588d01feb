import math
from pathlib import Path

import pytest

from edgellm.config import ScorerConfig
from edgellm.engine.types import TokenLogprob, TopLogprob
from edgellm.errors import EdgeLLMError
from edgellm.gateway.confidence import LogisticScorer, confidence, make_scorer, token_entropy


def lp(value: float, top: list[float] | None = None) -> TokenLogprob:
    alts = tuple(TopLogprob(f"t{i}", i, v, b"") for i, v in enumerate(top or []))
    return TokenLogprob("x", 0, value, b"x", alts)


def test_features() -> None:
    c = confidence([lp(-0.1), lp(-2.0), lp(-0.6)])
    assert c is not None
    assert c.mean_logprob == pytest.approx(-0.9) and c.min_logprob == -2.0 and c.n_tokens == 3
    assert confidence([]) is None


def test_entropy_from_top_alternatives() -> None:
    half = math.log(0.5)
    assert token_entropy(lp(half, [half, half])) == pytest.approx(math.log(2))
    assert token_entropy(lp(0.0, [0.0])) == pytest.approx(0.0)
    # a quarter of the mass unseen counts as one more outcome
    q = math.log(0.25)
    expected = -(3 * 0.25 * q) - 0.25 * q
    assert token_entropy(lp(q, [q, q, q])) == pytest.approx(expected)
    assert token_entropy(lp(-1.5)) == 1.5  # no alternatives: surprisal


def test_registry_and_logistic(tmp_path: Path) -> None:
    c = confidence([lp(-0.2, [-0.2, -2.0])])
    assert c is not None
    assert make_scorer(ScorerConfig(kind="mean_logprob")).score(c) == pytest.approx(-0.2)
    assert make_scorer(ScorerConfig(kind="neg_entropy")).score(c) < 0
    with pytest.raises(EdgeLLMError, match="unknown scorer"):
        make_scorer(ScorerConfig(kind="vibes"))
    with pytest.raises(EdgeLLMError, match="needs `path`"):
        make_scorer(ScorerConfig(kind="logistic"))
    LogisticScorer(["mean_logprob"], [2.0], 1.0).save(tmp_path / "s.json")
    s = make_scorer(ScorerConfig(kind="logistic", path=tmp_path / "s.json"))
    assert s.score(c) == pytest.approx(1 / (1 + math.exp(-(1.0 + 2.0 * -0.2))))
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(EdgeLLMError, match="cannot load"):
        LogisticScorer.load(tmp_path / "bad.json")
