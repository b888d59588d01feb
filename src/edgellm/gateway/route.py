"""What the gateway did for one request: reported in `x-edgellm-route` and the `route` object."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class RouteInfo:
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

    def merge(self, other: RouteInfo) -> None:
        """Add what an attempt recorded in its own `RouteInfo` (one that may finish after the
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
