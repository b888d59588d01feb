"""Online thresholds: the rate rule holds its target through a shift of the score distribution
(a fixed threshold does not), the feedback rule finds the threshold the outcomes imply (and
escalates everything when the score says nothing), answers are remembered within their bounds,
and state survives a restart through its file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from edgellm.config import FeedbackThresholdConfig, TargetRateThresholdConfig
from edgellm.gateway.policies.cascade import CascadePolicyConfig
from edgellm.gateway.thresholds import OnlineThreshold
from edgellm.gateway.thresholds.answers import Answers, Decision
from edgellm.gateway.thresholds.feedback import FeedbackRule
from edgellm.gateway.thresholds.target_rate import TargetRateRule
from edgellm.gateway.training import calibrate

TARGET = 0.3
SHIFT_AT = 1000
RECOVERY = 200  # requests after the shift within which the rate must be back at target


def shifted_scores(seed: int = 0) -> np.ndarray:
    """Scores whose distribution drops after SHIFT_AT requests (harder requests arrive)."""
    rng = np.random.default_rng(seed)
    before = rng.normal(-1.0, 0.5, SHIFT_AT)
    after = rng.normal(-2.0, 0.7, 2 * SHIFT_AT)
    return np.concatenate([before, after])


def realised(scores: np.ndarray, rule: TargetRateRule | None, fixed: float) -> np.ndarray:
    """Per request: 1 if it escalated, under the rule (or the fixed threshold)."""
    out = np.zeros(scores.size)
    for i, s in enumerate(scores):
        threshold = fixed if rule is None else rule.threshold()
        out[i] = s < threshold
        if rule is not None:
            rule.observe(float(s))
    return out


def rate_after_recovery(escalated: np.ndarray) -> float:
    return float(escalated[SHIFT_AT + RECOVERY :].mean())


def test_target_rate_holds_the_rate_through_a_shift_a_fixed_threshold_does_not() -> None:
    scores = shifted_scores()
    offline = calibrate(scores[:500], TARGET)  # calibrated on the mix before the shift
    config = TargetRateThresholdConfig(rate=TARGET, window=100)
    online = realised(scores, TargetRateRule(config, offline), offline)
    fixed = realised(scores, None, offline)
    # both hold the target before the shift
    assert abs(online[:SHIFT_AT].mean() - TARGET) < 0.05
    assert abs(fixed[:SHIFT_AT].mean() - TARGET) < 0.05
    # after it, the online rule is back at the target within RECOVERY requests ...
    assert abs(rate_after_recovery(online) - TARGET) < 0.05
    windows = [online[i : i + 100].mean() for i in range(SHIFT_AT + RECOVERY, scores.size - 99)]
    assert max(abs(w - TARGET) for w in windows) < 0.15
    # ... while the fixed threshold escalates most requests
    assert rate_after_recovery(fixed) > TARGET + 0.3


def test_target_rate_uses_the_start_threshold_until_it_has_enough_scores() -> None:
    rule = TargetRateRule(TargetRateThresholdConfig(rate=0.5, min_samples=20), initial=-7.0)
    for s in range(19):
        rule.observe(float(s))
    assert rule.threshold() == -7.0
    rule.observe(19.0)
    assert rule.threshold() == 9.5  # half of 0..19 below it
    rule.observe(math.nan)  # not a score: ignored
    assert rule.describe()["scores_seen"] == 20


def test_target_rate_is_the_quantile_of_exactly_the_last_window_scores() -> None:
    rng = np.random.default_rng(1)
    scores = np.round(rng.normal(0, 1, 500), 2)  # rounded: ties, as discrete scores give
    rule = TargetRateRule(TargetRateThresholdConfig(rate=0.3, window=50), initial=0.0)
    for i, s in enumerate(scores):
        rule.observe(float(s))
        if i >= 49:
            assert rule.threshold() == calibrate(scores[i - 49 : i + 1], 0.3)


def p_small_right(score: np.ndarray | float) -> np.ndarray:
    return np.asarray(1 / (1 + np.exp(-4 * (np.asarray(score) + 1.5))))


def run_feedback(rule: FeedbackRule, n: int, *, informative: bool, seed: int = 0) -> None:
    """Scores uniform on [-3, 0]; served answers are rated (partial feedback: a kept answer
    tells about the first tier, an escalated one about the larger tier, right 80 % of the
    time)."""
    rng = np.random.default_rng(seed)
    for s in rng.uniform(-3, 0, n):
        rule.observe(float(s))
        kept = s >= rule.threshold()
        p = float(p_small_right(s)) if informative else 0.5
        right = rng.random() < (p if kept else 0.8)
        rule.learn(float(s), kept=bool(kept), outcome=float(right))


def test_feedback_rule_learns_the_threshold_the_outcomes_imply() -> None:
    # keep where P(right | s) >= 0.8 - 0.1: s >= -1.5 + logit(0.7) / 4
    best = -1.5 + math.log(0.7 / 0.3) / 4
    config = FeedbackThresholdConfig(escalation_cost=0.1, optimism=0.0, forgetting=1.0)
    rule = FeedbackRule(config, initial=-3.0)
    run_feedback(rule, 4000, informative=True)
    assert abs(rule.threshold() - best) < 0.15
    assert abs(rule.escalated_accuracy - 0.8) < 0.05
    assert rule.w[1] > 2  # the slope in the score was found


def test_feedback_rule_escalates_everything_when_the_score_says_nothing() -> None:
    config = FeedbackThresholdConfig(escalation_cost=0.1, optimism=0.0, forgetting=1.0)
    rule = FeedbackRule(config, initial=-3.0)
    run_feedback(rule, 4000, informative=False)  # right half the time whatever the score
    escalated = np.mean(np.array(rule.scores) < rule.threshold())
    assert escalated > 0.95  # escalating wins everywhere (0.8 - 0.1 > 0.5)


def test_feedback_rule_keeps_the_start_threshold_until_enough_outcomes() -> None:
    rule = FeedbackRule(FeedbackThresholdConfig(min_feedback=30, forgetting=1.0), initial=-2.5)
    run_feedback(rule, 20, informative=True)
    assert rule.threshold() == -2.5
    assert rule.describe()["learning"] is False


def test_optimism_escalates_more_while_few_outcomes_are_in() -> None:
    thresholds = []
    for optimism in (0.0, 2.0):
        config = FeedbackThresholdConfig(escalation_cost=0.1, optimism=optimism, min_feedback=30)
        rule = FeedbackRule(config, initial=-3.0)
        run_feedback(rule, 150, informative=True, seed=3)
        thresholds.append(rule.threshold())
    assert thresholds[1] > thresholds[0] + 0.05


def test_answers_are_bounded_by_count_and_age_and_rated_once() -> None:
    now = [0.0]
    answers = Answers(capacity=3, ttl_s=10.0, clock=lambda: now[0])
    for i in range(4):
        answers.record(f"a{i}", Decision(-1.0, -2.0, [], now[0]))
    assert len(answers) == 3 and answers.get("a0") is None  # the oldest went
    assert answers.pop("a1") is not None
    assert answers.pop("a1") is None  # rated once
    now[0] = 10.5
    assert answers.pop("a2") is None  # expired
    assert len(answers) == 0


def test_a_degraded_answer_is_rated_as_the_first_tiers() -> None:
    escalations: list[dict[str, object]] = [{"from": "small", "to": "cloud"}]
    decision = Decision(score=-3.0, threshold=-1.0, escalations=escalations, at=0.0)
    escalations[0]["outcome"] = "down"  # the cloud was down: the small answer was served
    assert decision.escalated and decision.kept
    escalations[0]["outcome"] = "answered"
    assert decision.escalated and not decision.kept


def test_state_survives_a_restart_through_its_file(tmp_path: Path) -> None:
    path = tmp_path / "state" / "cascade.json"
    config = TargetRateThresholdConfig(rate=0.25, window=50, state_path=path, save_interval_s=0)
    first = OnlineThreshold(config, initial=-9.0)
    for i, s in enumerate(np.linspace(-3, 0, 80)):
        first.decided(f"cmpl-{i}", float(s), first.threshold(), [])
    assert path.exists() and not list(path.parent.glob(".*.tmp"))  # replaced, nothing left over
    second = OnlineThreshold(config, initial=-9.0)
    assert second.threshold() == first.threshold() != -9.0
    assert second.rule.state() == first.rule.state()

    feedback = FeedbackThresholdConfig(state_path=tmp_path / "fb.json", save_interval_s=0,
                                       min_feedback=5)  # fmt: skip
    one = OnlineThreshold(feedback, initial=-9.0)
    for i, s in enumerate(np.linspace(-3, 0, 40)):
        one.decided(f"cmpl-{i}", float(s), -9.0, [])
        one.rate(f"cmpl-{i}", float(s > -1.5))
    two = OnlineThreshold(feedback, initial=-9.0)
    assert two.threshold() == pytest.approx(one.threshold()) and one.threshold() != -9.0
    assert two.describe()["logit_p_right"] == one.describe()["logit_p_right"]


@pytest.mark.parametrize(
    "content",
    ["{not json", json.dumps({"version": 1, "kind": "feedback", "state": {}}),
     json.dumps({"version": 1, "kind": "target_rate", "state": {"scores": [1], "escalated": []}})],
)  # fmt: skip
def test_a_bad_or_foreign_state_file_starts_afresh(tmp_path: Path, content: str) -> None:
    path = tmp_path / "state.json"
    path.write_text(content)
    config = TargetRateThresholdConfig(rate=0.5, state_path=path)
    online = OnlineThreshold(config, initial=-4.0)
    assert online.threshold() == -4.0 and online.describe()["scores_seen"] == 0


def test_the_saved_state_is_rate_limited(tmp_path: Path) -> None:
    now = [0.0]
    path = tmp_path / "s.json"
    config = TargetRateThresholdConfig(rate=0.5, state_path=path, save_interval_s=10)
    online = OnlineThreshold(config, initial=0.0, clock=lambda: now[0])
    online.decided("cmpl-a", 1.0, 0.0, [])  # the first change is written at once
    online.decided("cmpl-b", 2.0, 0.0, [])  # within the interval: not yet
    assert json.loads(path.read_text())["state"]["scores"] == [1.0]
    online.save()  # as at shutdown
    assert json.loads(path.read_text())["state"]["scores"] == [1.0, 2.0]


def test_only_a_routes_first_score_counts() -> None:
    online = OnlineThreshold(TargetRateThresholdConfig(rate=0.5), initial=0.0)
    escalations: list[dict[str, object]] = []
    online.decided("chatcmpl-x", -1.0, 0.0, escalations)
    online.decided("chatcmpl-x", 5.0, 0.0, escalations)  # the next tier's score, same route
    assert online.decisions == 1
    rated = online.rate("chatcmpl-x", 1.0)
    assert rated is not None and rated.score == -1.0 and rated.escalated


def test_existing_cascade_configs_stay_valid_and_online_is_checked() -> None:
    plain = CascadePolicyConfig(name="c", threshold=-0.5)
    assert plain.online is None
    cfg = CascadePolicyConfig.model_validate(
        {"name": "c", "online": {"kind": "target_rate", "rate": 0.2}}
    )
    assert isinstance(cfg.online, TargetRateThresholdConfig)
    with pytest.raises(ValidationError, match=r"online\.target_rate\.rate"):
        CascadePolicyConfig.model_validate({"name": "c", "online": {"kind": "target_rate"}})
    with pytest.raises(ValidationError, match="does not match any of the expected tags"):
        CascadePolicyConfig.model_validate({"name": "c", "online": {"kind": "bandit"}})
