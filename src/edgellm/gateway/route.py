"""The vocabulary of routing, shared by the router, the policies and the API layer: the models a
request may go to (`Candidate`), the answer started on one of them (`StartedAnswer`), and what the
gateway did for the request (`Route`, reported in `x-edgellm-route` and the `route` object).
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edgellm.config import HttpBackendConfig, Tier
from edgellm.gateway.backends.base import Backend
from edgellm.gateway.errors import NoBackendError
from edgellm.gateway.streams import ReplayStream
from edgellm.wire.echo import Echo

if TYPE_CHECKING:
    from edgellm.gateway.affinity import ReplicaAffinity
    from edgellm.gateway.request import GatewayRequest

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Route:
    """What the gateway did for one request: the policy and why it chose (signals, scores,
    threshold), where the answer runs, the cascade's escalations and every attempt (hops)."""

    policy: str | None = None  # None: the client named a model
    signals: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, Any] = field(default_factory=dict)
    threshold: float | None = None
    model: str | None = None
    tier: str | None = None
    replica: str | None = None
    escalations: list[dict[str, Any]] = field(default_factory=list)
    degraded: bool = False  # a lower answer than the policy wanted: every higher tier failed
    hops: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def hop(self, model: str, replica: str, outcome: str, since: float, **extra: Any) -> None:
        ms = round((time.perf_counter() - since) * 1e3, 3)
        self.hops.append({"model": model, "replica": replica, "outcome": outcome, "ms": ms} | extra)

    def merge(self, other: Route) -> None:
        """Add what an attempt recorded in its own `Route` (one that may finish after the
        request has been answered, so it cannot write into the request's own)."""
        self.hops.extend(other.hops)
        self.signals.update(other.signals)

    @property
    def fallbacks(self) -> int:
        return sum(1 for h in self.hops if h["outcome"] not in {"ok", "escalated"})

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "model": self.model,
            "tier": self.tier,
            "replica": self.replica,
            "signals": self.signals,
            "scores": self.scores,
            "threshold": self.threshold,
            "escalations": self.escalations,
            "degraded": self.degraded,
            "fallbacks": self.fallbacks,
            "hops": self.hops,
        }

    def header(self) -> str:
        parts = [
            f"model={self.model}",
            f"tier={self.tier}",
            f"replica={self.replica}",
            f"policy={self.policy or 'explicit'}",
            f"escalations={len(self.escalations)}",
            f"fallbacks={self.fallbacks}",
        ]
        if self.degraded:
            parts.append("degraded=true")
        return "; ".join(parts)


def ordered_replicas(replicas: list[Backend], start: int) -> list[Backend]:
    """Available replicas first, least outstanding first, round-robin among equals (`start` is
    the rotation: a counter that moves on every call)."""
    if not replicas:
        return []
    start %= len(replicas)
    rotated = replicas[start:] + replicas[:start]
    now = time.monotonic()
    return sorted(rotated, key=lambda r: (not r.state.available(now), r.state.outstanding))


@dataclass(slots=True)
class Candidate:
    """A model the gateway can send a request to: its tier, price and replicas."""

    name: str
    tier: Tier
    cost_per_1k_tokens: float
    context_length: int | None
    replicas: list[Backend] = field(default_factory=list)
    dns: list[HttpBackendConfig] = field(default_factory=list)
    upstream_model: str = ""
    _rr: itertools.count[int] = field(default_factory=itertools.count)
    affinity: ReplicaAffinity | None = None  # where prompts' prefixes are cached (the router's)
    serves: tuple[str, ...] = ("generation",)  # generation, embeddings (config `serves`)

    @property
    def is_edge(self) -> bool:
        return self.tier != "cloud"

    def ordered_replicas(self) -> list[Backend]:
        return ordered_replicas(self.replicas, next(self._rr))

    def expected_cached(self, call: GatewayRequest) -> dict[str, int]:
        """Prompt tokens of `call` each replica is expected to hold cached (empty: no index, or
        one replica)."""
        a = self.affinity
        if a is None or len(self.replicas) < 2 or not a.settings.enabled:
            return {}
        return a.expect(self.replicas, call)

    def reachable(self, now: float | None = None) -> bool:
        """Whether any replica may be tried now: not every one has an open circuit or fails its
        health checks (a model with no replica, e.g. an unresolved DNS name, is unreachable)."""
        now = time.monotonic() if now is None else now
        return any(r.state.available(now) for r in self.replicas)

    def window(self) -> int | None:
        if self.context_length is not None:
            return self.context_length
        known = [c for r in self.replicas if (c := r.context_length()) is not None]
        return min(known) if known else None


@dataclass(slots=True)
class StartedAnswer:
    """An answer started on a replica: its events (the first already read), where it runs, the
    model name to echo, and the route taken."""

    stream: ReplayStream
    model: Candidate
    replica: Backend
    echo: Echo  # a text completion's echoed prompt (see wire/echo.py)
    info: Route


def down_error(models: list[Candidate]) -> NoBackendError:
    """The 503 for models none of whose replicas may be tried. The replicas' addresses and last
    errors go to the debug log only: each failure was logged when it happened, and a cascade
    that skips a tier known to be down does so on every request."""
    names = ", ".join(m.name for m in models)
    why = "; ".join(
        f"{r.id}: {r.state.last_error or 'circuit open'}" for m in models for r in m.replicas
    )
    log.debug("every replica of %s is down (%s)", names, why or "no replica")
    return NoBackendError(f"every replica of {names} is down")
