import time

import pytest

from edgellm.gateway.auth import TokenBucket


def test_token_limit_is_charged_after_the_fact_and_refused_while_in_debt() -> None:
    bucket = TokenBucket.per_minute(600)  # 10 tokens a second, holds 600
    now = time.monotonic()
    assert bucket.in_debt(now) == 0
    bucket.charge(550, now)
    assert bucket.in_debt(now) == 0  # 50 left: still in credit
    bucket.charge(100, now)  # an answer longer than what was left: 50 in debt
    assert bucket.in_debt(now) == pytest.approx(5.0)
    assert bucket.in_debt(now + 4.0) == pytest.approx(1.0)
    assert bucket.in_debt(now + 5.5) == 0
    assert bucket.in_debt(now + 3600) == 0 and bucket.tokens == pytest.approx(600)  # capped


def test_a_bucket_spent_to_exactly_zero_is_not_in_debt() -> None:
    bucket = TokenBucket.per_minute(60)
    now = time.monotonic()
    bucket.charge(60, now)
    assert bucket.in_debt(now) == 0
    bucket.charge(1, now)
    assert bucket.in_debt(now) == pytest.approx(1.0)
