"""The policy contract: what a policy is given (`PolicyContext`), what it implements (`Policy`),
and the registry a policy file adds itself and its config class to (`register`).

A policy decides; the router executes: a policy reads the request and the candidate models,
records why it chose in the route, and hands an ordered list of models to `context.execute`,
which starts the answer on the first replica that takes it (failing over as configured).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from edgellm.config import POLICY_CONFIGS, TIERS, PolicyConfig
from edgellm.gateway.request import GatewayRequest
from edgellm.gateway.route import Candidate, Route, StartedAnswer


class PolicyMetrics(Protocol):
    """The gateway metrics a policy updates itself (attempts and answers are counted by the
    router)."""

    def count_escalation(self, policy: str, source: str, target: str) -> None: ...

    def count_degraded(self, policy: str, model: str, reason: str) -> None: ...


class PolicyContext(Protocol):
    """What a policy may use of the gateway (the router implements it)."""

    @property
    def metrics(self) -> PolicyMetrics: ...

    def candidates(self, names: Sequence[str] = ()) -> list[Candidate]:
        """The models named (every configured model if none), smallest tier first."""
        ...

    async def execute(
        self, call: GatewayRequest, models: list[Candidate], info: Route, *, fallback: bool = True
    ) -> StartedAnswer:
        """Start the answer on the first of `models` whose replica takes it. A private call
        never leaves the edge. `fallback=False`: a context-length error is final."""
        ...


class Policy(Protocol):
    async def route(self, call: GatewayRequest, info: Route) -> StartedAnswer:
        """Choose the models for `call` and start the answer through the context, recording
        signals and scores in `info`."""
        ...


PolicyFactory = Callable[[Any, PolicyContext], Policy]  # (its config, the context)
POLICY_KINDS: dict[str, PolicyFactory] = {}

F = TypeVar("F", bound=PolicyFactory)


def register(kind: str, config: type[PolicyConfig]) -> Callable[[F], F]:
    """Register a policy and its config class under `kind` (the config's `kind` default): a
    configuration entry `{kind: <kind>, ...}` validates as `config` and builds the policy."""
    if config.model_fields["kind"].default != kind:
        raise TypeError(f"{config.__name__}.kind must default to {kind!r}")

    def add(factory: F) -> F:
        known = POLICY_KINDS.get(kind)
        if known is not None and known is not factory:
            raise ValueError(f"policy kind {kind!r} is registered twice")
        POLICY_KINDS[kind] = factory
        POLICY_CONFIGS[kind] = config
        return factory

    return add


def fallback_order(models: list[Candidate], first: Candidate) -> list[Candidate]:
    """`first`, then larger tiers in order, then smaller ones (largest first)."""
    rank = TIERS.index(first.tier)
    up = [m for m in models if m is not first and TIERS.index(m.tier) >= rank]
    down = [m for m in models if m is not first and TIERS.index(m.tier) < rank]
    return [first, *up, *reversed(down)]
