"""The policy interface and its registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from edgellm.gateway.call import Call
from edgellm.gateway.route import RouteInfo

if TYPE_CHECKING:
    from edgellm.gateway.router import Routed, RoutedModel, Router


class Policy(Protocol):
    async def route(self, call: Call, info: RouteInfo) -> Routed:
        """Choose (and start) the model for `call`, recording signals and scores in `info`."""
        ...


PolicyFactory = Callable[[Any, "Router"], Policy]
POLICY_KINDS: dict[str, PolicyFactory] = {}


def register(kind: str) -> Callable[[PolicyFactory], PolicyFactory]:
    def add(factory: PolicyFactory) -> PolicyFactory:
        POLICY_KINDS[kind] = factory
        return factory

    return add


def fallback_order(models: list[RoutedModel], first: RoutedModel) -> list[RoutedModel]:
    """`first`, then larger tiers in order, then smaller ones (largest first)."""
    from edgellm.config import TIERS

    rank = TIERS.index(first.tier)
    up = [m for m in models if m is not first and TIERS.index(m.tier) >= rank]
    down = [m for m in models if m is not first and TIERS.index(m.tier) < rank]
    return [first, *up, *reversed(down)]
