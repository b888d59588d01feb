"""Routing policies, registered by name; each implements one method, `route`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgellm.config import EdgeLLMConfig, RulesPolicyConfig
from edgellm.gateway.policies.base import POLICY_KINDS, Policy
from edgellm.gateway.policies.cascade import CascadePolicy
from edgellm.gateway.policies.learned import LearnedPolicy
from edgellm.gateway.policies.load import LoadPolicy
from edgellm.gateway.policies.rules import RulesPolicy

if TYPE_CHECKING:
    from edgellm.gateway.router import Router

__all__ = ["POLICY_KINDS", "CascadePolicy", "LearnedPolicy", "LoadPolicy", "Policy", "RulesPolicy"]


def build_policies(config: EdgeLLMConfig, router: Router) -> dict[str, Policy]:
    """The configured policies by name; `auto` is a `rules` policy over every model unless the
    configuration defines one of that name."""
    configs = list(config.policies)
    if not any(p.name == config.router.default_policy for p in configs):
        configs.append(RulesPolicyConfig(name=config.router.default_policy))
    return {p.name: POLICY_KINDS[p.kind](p, router) for p in configs}
