"""Gateway metrics, in the serving process's Prometheus registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
_LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry or CollectorRegistry()
        self.registry = r
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
        self.ttft = Histogram(
            "edgellm_gateway_time_to_first_token_seconds",
            "Arrival at the gateway to the first token, through every hop",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "edgellm_gateway_e2e_latency_seconds",
            "Arrival at the gateway to the last token",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )

        # labelled children, looked up once per label set (labels() takes a lock and builds
        # a tuple on every call)
        self._counters: dict[tuple[str, ...], Counter] = {}
        self._histograms: dict[tuple[str, ...], Histogram] = {}

    def _counter(self, metric: Counter, key: tuple[str, ...]) -> Counter:
        child = self._counters.get(key)
        if child is None:
            child = self._counters[key] = metric.labels(*key[1:])
        return child

    def _histogram(self, metric: Histogram, key: tuple[str, ...]) -> Histogram:
        child = self._histograms.get(key)
        if child is None:
            child = self._histograms[key] = metric.labels(*key[1:])
        return child

    def requests_child(self, model: str, backend: str, outcome: str) -> Counter:
        return self._counter(self.requests, ("requests", model, backend, outcome))

    def routed_child(self, policy: str, model: str) -> Counter:
        return self._counter(self.routed, ("routed", policy, model))

    def ttft_child(self, model: str) -> Histogram:
        return self._histogram(self.ttft, ("ttft", model))

    def e2e_child(self, model: str) -> Histogram:
        return self._histogram(self.e2e, ("e2e", model))
