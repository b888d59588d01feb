"""Routing policies, one file each: a policy and its config class register themselves under one
name (`base.register`). Every module of this package is imported here, so adding a policy is
adding its file."""

from __future__ import annotations

import importlib
import pkgutil

from edgellm.config import EdgeLLMConfig, PolicyConfig
from edgellm.gateway.policies.base import POLICY_KINDS, Policy, PolicyContext, register

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["POLICY_KINDS", "Policy", "PolicyContext", "build_policies", "register"]


def build_policies(config: EdgeLLMConfig, context: PolicyContext) -> dict[str, Policy]:
    """The configured policies by name; `auto` is a `rules` policy over every model unless the
    configuration defines one of that name."""
    from edgellm.gateway.policies.rules import RulesPolicyConfig

    configs: list[PolicyConfig] = list(config.policies)
    if not any(p.name == config.router.default_policy for p in configs):
        configs.append(RulesPolicyConfig(name=config.router.default_policy))
    return {p.name: POLICY_KINDS[p.kind](p, context) for p in configs}
