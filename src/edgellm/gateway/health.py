"""Per-replica state: outstanding requests, measured speeds, circuit breaker, active health."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from edgellm.engine.types import Timings

_ALPHA = 0.3  # weight of the newest sample in the moving averages


def _ewma(old: float, new: float) -> float:
    return (1 - _ALPHA) * old + _ALPHA * new


@dataclass(slots=True)
class ReplicaState:
    max_concurrency: int = 4
    failure_threshold: int = 3
    cooldown_s: float = 10.0
    outstanding: int = 0
    consecutive_failures: int = 0
    open_until: float = 0.0  # circuit open (no traffic) until this monotonic time
    healthy: bool = True  # last active health check
    # Priors until measured: a Pi-class node running a ~135M model.
    prefill_tps: float = 200.0
    decode_tps: float = 20.0
    rtt_s: float = 0.002
    service_s: float = 1.0
    requests: int = 0
    failures: int = 0
    cached_tokens: int = 0  # prompt tokens the replica reported reused (timings.cache_n)
    prefilled_tokens: int = 0  # prompt tokens it reported prefilling (timings.prompt_n)
    last_error: str | None = None
    _clock: float = field(default=0.0, repr=False)

    def available(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return self.healthy and now >= self.open_until

    @property
    def saturated(self) -> bool:
        return self.outstanding >= self.max_concurrency

    @property
    def circuit(self) -> str:
        if time.monotonic() < self.open_until:
            return "open"
        return "half-open" if self.consecutive_failures >= self.failure_threshold else "closed"

    def estimate_s(self, prompt_tokens: int, max_tokens: int) -> float:
        """Expected completion time: queue + prefill + decode + network round trip."""
        return (
            self.outstanding * self.service_s
            + prompt_tokens / self.prefill_tps
            + max_tokens / self.decode_tps
            + self.rtt_s
        )

    def record_success(self, timings: Timings | None, elapsed_s: float) -> None:
        self.requests += 1
        self.consecutive_failures = 0
        self.open_until = 0.0
        self.service_s = _ewma(self.service_s, elapsed_s)
        if timings is not None:
            self.cached_tokens += timings.cache_n
            self.prefilled_tokens += timings.prompt_n
            if timings.prompt_per_second > 0:
                self.prefill_tps = _ewma(self.prefill_tps, timings.prompt_per_second)
            if timings.predicted_per_second > 0:
                self.decode_tps = _ewma(self.decode_tps, timings.predicted_per_second)
            if timings.total_ms > 0:
                self.rtt_s = _ewma(self.rtt_s, max(elapsed_s - timings.total_ms / 1e3, 0.0))

    def record_failure(self, error: str) -> None:
        self.requests += 1
        self.failures += 1
        self.last_error = error
        self.consecutive_failures += 1
        if self.consecutive_failures >= self.failure_threshold:
            self.open_until = time.monotonic() + self.cooldown_s

    def record_health(self, ok: bool) -> None:
        self.healthy = ok
        if ok and self.consecutive_failures >= self.failure_threshold:
            self.open_until = 0.0  # half-open: the next request is the trial

    def describe(self) -> dict[str, object]:
        return {
            "healthy": self.healthy,
            "circuit": self.circuit,
            "outstanding": self.outstanding,
            "prefill_tps": round(self.prefill_tps, 1),
            "decode_tps": round(self.decode_tps, 1),
            "rtt_ms": round(self.rtt_s * 1e3, 2),
            "requests": self.requests,
            "failures": self.failures,
            "cached_tokens": self.cached_tokens,
            "prefilled_tokens": self.prefilled_tokens,
        }
