import math

import numpy as np

from edgellm.engine.logprobs import log_softmax_at, token_logprob


def test_log_softmax_matches_definition() -> None:
    logits = np.array([1.0, 2.0, 3.0, -1.0], dtype=np.float32)
    lp, lse = log_softmax_at(logits, 2)
    expected_lse = math.log(sum(math.exp(x) for x in [1.0, 2.0, 3.0, -1.0]))
    assert math.isclose(lse, expected_lse, rel_tol=1e-9)
    assert math.isclose(lp, 3.0 - expected_lse, rel_tol=1e-9)


def test_log_softmax_is_stable_for_large_logits() -> None:
    logits = np.array([1000.0, 999.0], dtype=np.float32)
    lp, _ = log_softmax_at(logits, 0)
    assert math.isclose(lp, -math.log1p(math.exp(-1.0)), rel_tol=1e-6)


def test_top_k_sorted_and_consistent() -> None:
    logits = np.array([0.1, 5.0, 3.0, 4.0, -2.0], dtype=np.float32)
    out = token_logprob(logits, 2, 3, lambda t: f"t{t}".encode())
    assert [t.token_id for t in out.top] == [1, 3, 2]
    assert out.token == "t2" and out.bytes == b"t2"
    assert math.isclose(out.top[2].logprob, out.logprob, rel_tol=1e-6)
    total = sum(math.exp(x.logprob) for x in out.top)
    assert total < 1.0
