"""The `rules` policy's default markers and PII patterns: what they catch and what they leave."""

from __future__ import annotations

import re

import pytest

from edgellm.gateway.policies.rules import RulesPolicyConfig, find_pii

CONFIG = RulesPolicyConfig(name="auto")
PII = [(name, re.compile(p)) for name, p in CONFIG.pii_patterns.items()]
MATH = next(re.compile(m.pattern, re.IGNORECASE) for m in CONFIG.markers if m.name == "math")


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("pay to DE89 3704 0044 0532 0130 00 today", ["iban"]),
        ("GB29 NWBK 6016 1331 9268 19", ["iban"]),
        ("card 4111 1111 1111 1111, exp 12/26", ["card"]),
        ("call me on +49 30 12345678", ["phone"]),
        ("write to alice@example.com", ["email"]),
        ("alice@example.com, DE89370400440532013000", ["email", "iban"]),
        ("the years 2019-2021 and 3 apples", []),
    ],
)
def test_each_piece_of_personal_data_is_named_once(text: str, found: list[str]) -> None:
    assert find_pii(text, PII) == found


@pytest.mark.parametrize(
    ("text", "is_math"),
    [
        ("What is 2+2?", True),
        ("Compute 12 * 7", True),
        ("12 - 7 = 5", True),
        ("Solve for x: x squared is nine", True),
        ("card expiry exp 12/26", False),
        ("born 1990-05-02", False),
        ("call 555-1234", False),
        ("open 9-17, Monday to Friday", False),
    ],
)
def test_math_marker_fires_on_arithmetic_not_on_dates_and_numbers(text: str, is_math: bool) -> None:
    assert bool(MATH.search(text)) is is_math
