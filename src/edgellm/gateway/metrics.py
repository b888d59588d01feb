"""Gateway metrics, in the serving process's Prometheus registry.

The request path's updates (one request's attempts, routing, overhead, TTFT and end-to-end time)
are recorded as plain tuples and applied to the Prometheus objects in one batch: when the
registry is collected (a scrape), or every `FOLD_EVERY` updates. On a core that idles between
requests each update of a Prometheus object costs cache misses (the six of a request ~60 µs
with cold caches, against one list append); batched, they run hot. A scrape sees every update
made before it, as before.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

FOLD_EVERY = 4096  # pending updates before they are applied without waiting for a scrape

_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
# seconds; the node's latency histograms (api/server_metrics.py) share the bounds, so that the
# dashboards' gateway and node quantiles are read off the same buckets
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry or CollectorRegistry()
        self.registry = r
        self._pending: list[tuple[Counter | Histogram, tuple[str, ...], float]] = []
        r.register(_Fold(self))  # first, so that a collection applies the pending updates first
        self.requests = Counter(
            "edgellm_gateway_backend_requests",
            "Attempts per backend replica and outcome (ok, error, timeout, overloaded)",
            ["model", "backend", "outcome"],
            registry=r,
        )
        self.routed = Counter(
            "edgellm_gateway_routed_requests",
            "Requests by policy and the model that answered",
            ["policy", "model"],
            registry=r,
        )
        self.escalations = Counter(
            "edgellm_gateway_escalations",
            "Cascade escalations from one model to the next",
            ["policy", "source", "target"],
            registry=r,
        )
        self.degraded = Counter(
            "edgellm_gateway_degraded_answers",
            "Cascade answers served by a lower tier because every higher one failed, was down or "
            "missed the escalation deadline (reason: the last escalation's outcome)",
            ["policy", "model", "reason"],
            registry=r,
        )
        self.fallbacks = Counter(
            "edgellm_gateway_fallbacks",
            "Requests that moved on from a failed replica before the first token",
            ["model", "backend"],
            registry=r,
        )
        self.overhead = Histogram(
            "edgellm_gateway_overhead_seconds",
            "Time the gateway itself adds before the upstream answers (routing, parsing)",
            buckets=_OVERHEAD_BUCKETS,
            registry=r,
        )
        self.key_tokens = Counter(
            "edgellm_gateway_key_tokens",
            "Prompt + completion tokens of the answers per API key (when keys are configured)",
            ["key"],
            registry=r,
        )
        self.key_refusals = Counter(
            "edgellm_gateway_key_refusals",
            "Requests refused (429) per API key and the limit that refused them",
            ["key", "limit"],
            registry=r,
        )
        self.cached_tokens = Counter(
            "edgellm_gateway_cached_prompt_tokens",
            "Prompt tokens a replica reused from its cache (its answers' cache_n)",
            ["model", "backend"],
            registry=r,
        )
        self.prefilled_tokens = Counter(
            "edgellm_gateway_prefilled_prompt_tokens",
            "Prompt tokens a replica had to prefill (its answers' prompt_n)",
            ["model", "backend"],
            registry=r,
        )
        self.affinity_overrides = Counter(
            "edgellm_gateway_affinity_overrides",
            "Requests not sent to the replica expected to hold their prefix, because it was "
            "over its bounded load (backend: the replica passed over)",
            ["model", "backend"],
            registry=r,
        )
        self.ttft = Histogram(
            "edgellm_gateway_time_to_first_token_seconds",
            "Arrival at the gateway to the first token, through every hop",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "edgellm_gateway_e2e_latency_seconds",
            "Arrival at the gateway to the last token",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

        # labelled children, looked up once per label set (labels() takes a lock and builds
        # a tuple on every call)
        self._children: dict[tuple[Counter | Histogram, tuple[str, ...]], Counter | Histogram] = {}

    def _later(self, metric: Counter | Histogram, labels: tuple[str, ...], value: float) -> None:
        pending = self._pending
        pending.append((metric, labels, value))
        if len(pending) >= FOLD_EVERY:
            self.fold()

    def fold(self) -> None:
        """Apply the pending updates to the Prometheus objects."""
        pending, self._pending = self._pending, []
        children = self._children
        for metric, labels, value in pending:
            child = children.get((metric, labels))
            if child is None:
                child = children[(metric, labels)] = metric.labels(*labels) if labels else metric
            if isinstance(child, Histogram):
                child.observe(value)
            else:
                child.inc(value)

    def count_key_tokens(self, key: str, tokens: int) -> None:
        self._later(self.key_tokens, (key,), float(tokens))

    def count_attempt(self, model: str, backend: str, outcome: str) -> None:
        self._later(self.requests, (model, backend, outcome), 1.0)

    def count_routed(self, policy: str, model: str) -> None:
        self._later(self.routed, (policy, model), 1.0)

    def count_escalation(self, policy: str, source: str, target: str) -> None:
        self._later(self.escalations, (policy, source, target), 1.0)

    def count_degraded(self, policy: str, model: str, reason: str) -> None:
        self._later(self.degraded, (policy, model, reason), 1.0)

    def count_prompt_tokens(self, model: str, backend: str, cached: int, prefilled: int) -> None:
        self._later(self.cached_tokens, (model, backend), float(cached))
        self._later(self.prefilled_tokens, (model, backend), float(prefilled))

    def count_affinity_override(self, model: str, backend: str) -> None:
        self._later(self.affinity_overrides, (model, backend), 1.0)

    def observe_overhead(self, seconds: float) -> None:
        self._later(self.overhead, (), seconds)

    def observe_ttft(self, model: str, seconds: float) -> None:
        self._later(self.ttft, (model,), seconds)

    def observe_e2e(self, model: str, seconds: float) -> None:
        self._later(self.e2e, (model,), seconds)


class _Fold(Collector):
    """Collected before the gateway's metrics: applies their pending updates, yields nothing."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        self._metrics.fold()
        return []
