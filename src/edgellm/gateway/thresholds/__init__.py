"""Online thresholds for the cascade: rules registered by name, one file each, with their
config classes in `edgellm.config` (the `online` field of `CascadePolicyConfig`, in
gateway/policies/cascade.py)."""

from edgellm.gateway.thresholds import feedback, target_rate
from edgellm.gateway.thresholds.base import RULES, ThresholdRule, make_rule, register
from edgellm.gateway.thresholds.online import OnlineThreshold, Rated

__all__ = [
    "RULES",
    "OnlineThreshold",
    "Rated",
    "ThresholdRule",
    "feedback",
    "make_rule",
    "register",
    "target_rate",
]
