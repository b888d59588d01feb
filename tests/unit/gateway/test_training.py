from pathlib import Path

import numpy as np
import pytest

from edgellm.errors import EdgeLLMError
from edgellm.gateway.training import PromptClassifier, calibrate, fit_cascade_scorer


def test_calibrate_hits_the_target_rate() -> None:
    scores = np.linspace(0, 1, 101)
    for rate in (0.0, 0.1, 0.3, 0.5, 1.0):
        t = calibrate(scores, rate)
        assert (scores < t).mean() == pytest.approx(rate, abs=0.011)


def test_prompt_classifier_learns_and_round_trips(tmp_path: Path) -> None:
    easy = [f"what colour is item {i}" for i in range(40)]
    hard = [f"derive the integral of expression {i} step by step" for i in range(40)]
    clf = PromptClassifier.fit(easy + hard, [True] * 40 + [False] * 40, escalation_rate=0.5)
    assert clf.p_small_ok("what colour is the sky") > clf.p_small_ok("derive this integral")
    clf.save(tmp_path / "r.json")
    again = PromptClassifier.load(tmp_path / "r.json")
    assert again.threshold == clf.threshold
    assert again.p_small_ok("what colour") == pytest.approx(clf.p_small_ok("what colour"), abs=1e-4)
    p = again.p_small_ok_many(easy + hard)
    assert (p < again.threshold).mean() == pytest.approx(0.5, abs=0.05)
    with pytest.raises(EdgeLLMError, match="both outcomes"):
        PromptClassifier.fit(easy, [True] * 40, 0.5)


def test_cascade_scorer_prefers_confident_answers() -> None:
    rows = [{"mean_logprob": -x, "min_logprob": -2 * x, "mean_entropy": x, "n_tokens": 5.0}
            for x in np.linspace(0.05, 3, 60)]  # fmt: skip
    correct = [r["mean_logprob"] > -1.5 for r in rows]
    scorer = fit_cascade_scorer(rows, correct)
    from edgellm.gateway.confidence import Confidence

    assert scorer.score(Confidence(-0.1, -0.2, 0.1, 5)) > scorer.score(Confidence(-2.5, -5, 2.5, 5))
