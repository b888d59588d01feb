"""Prometheus metrics of a serving process: requests by endpoint and status, generations (tokens,
speeds, latencies), CPU, memory and queues (one registry per app, so tests stay isolated). The
gateway's routing metrics are `gateway/metrics.py`."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import psutil
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from edgellm.engine.pool import EngineLoad
from edgellm.engine.types import Finished, FinishReason, Timings
from edgellm.gateway.metrics import LATENCY_BUCKETS

_RATE_BUCKETS = (1, 2, 5, 10, 20, 40, 60, 80, 100, 125, 150, 200, 300, 500, 1000)


class _ProcessCollector(Collector):
    """CPU % (since the previous scrape) and RSS of this process, and per-model queue state."""

    def __init__(self, queue_state: Callable[[], Iterable[EngineLoad]]) -> None:
        self._proc = psutil.Process()
        self._proc.cpu_percent(None)  # the first call only starts the measurement interval
        self._queue_state = queue_state

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        cpu = GaugeMetricFamily(
            "edgellm_process_cpu_percent",
            "CPU use of the serving process since the previous scrape (100 = one core)",
        )
        cpu.add_metric([], self._proc.cpu_percent(None))
        rss = GaugeMetricFamily(
            "edgellm_process_resident_memory_bytes", "Resident memory of the serving process"
        )
        rss.add_metric([], float(self._proc.memory_info().rss))
        depth = GaugeMetricFamily(
            "edgellm_queue_depth", "Requests waiting for the model", labels=["model"]
        )
        running = GaugeMetricFamily(
            "edgellm_requests_running", "Requests being processed by the model", labels=["model"]
        )
        slots = GaugeMetricFamily("edgellm_slots", "Slots decoded together", labels=["model"])
        batch = GaugeMetricFamily(
            "edgellm_batch_size", "Tokens in the latest llama_decode batch", labels=["model"]
        )
        steps = CounterMetricFamily("edgellm_decode_steps", "llama_decode calls", labels=["model"])
        batched = CounterMetricFamily(
            "edgellm_batched_tokens", "Tokens evaluated in llama_decode batches", labels=["model"]
        )
        hits = CounterMetricFamily(
            "edgellm_prefix_cache_hits", "Requests that reused cached KV", labels=["model"]
        )
        restores = CounterMetricFamily(
            "edgellm_saved_state_restores",
            "Conversations restored from saved KV state",
            labels=["model"],
        )
        for load in self._queue_state():
            m = [load.model]
            depth.add_metric(m, load.waiting)
            running.add_metric(m, load.running)
            slots.add_metric(m, load.slots)
            batch.add_metric(m, load.stats.last_batch_size)
            steps.add_metric(m, load.stats.steps)
            batched.add_metric(m, load.stats.tokens_in_batches)
            hits.add_metric(m, load.stats.prefix_hits)
            restores.add_metric(m, load.stats.state_restores)
        yield from (cpu, rss, depth, running, slots, batch, steps, batched, hits, restores)


UNKNOWN_MODEL = "unknown"  # the `model` label of every request naming no served model


class Metrics:
    def __init__(
        self,
        queue_state: Callable[[], Iterable[EngineLoad]],
        model_names: Iterable[str] = (),
    ) -> None:
        """`model_names`: the names a request may use for a served model (names, aliases,
        policies); any other name a client sends is counted as `unknown`, so the label set
        stays bounded whatever clients send."""
        self._model_labels = {name: name for name in model_names}
        self._model_labels[""] = ""  # endpoints without a model (/health, /v1/models)
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "edgellm_requests",
            "HTTP requests by endpoint, model and status code",
            ["endpoint", "model", "status"],
            registry=r,
        )
        self.prompt_tokens = Counter(
            "edgellm_prompt_tokens", "Prompt tokens received", ["model"], registry=r
        )
        self.cached_prompt_tokens = Counter(
            "edgellm_prompt_tokens_cached",
            "Prompt tokens served from the KV cache",
            ["model"],
            registry=r,
        )
        self.generation_tokens = Counter(
            "edgellm_generation_tokens", "Tokens generated", ["model"], registry=r
        )
        self.cancelled = Counter(
            "edgellm_requests_cancelled",
            "Generations stopped because the client went away",
            ["model"],
            registry=r,
        )
        self.ttft = Histogram(
            "edgellm_time_to_first_token_seconds",
            "Time to first token, queue included",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "edgellm_e2e_request_latency_seconds",
            "Admission to last token",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "edgellm_queue_wait_seconds",
            "Time spent waiting for the model",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.decode_rate = Histogram(
            "edgellm_decode_tokens_per_second",
            "Decode speed per request (llama.cpp counters)",
            ["model"],
            buckets=_RATE_BUCKETS,
            registry=r,
        )
        self.prefill_rate = Histogram(
            "edgellm_prefill_tokens_per_second",
            "Prefill speed per request (llama.cpp counters)",
            ["model"],
            buckets=_RATE_BUCKETS,
            registry=r,
        )
        self.embedding_inputs = Counter(
            "edgellm_embedding_inputs", "Inputs embedded (/v1/embeddings)", ["model"], registry=r
        )
        self.embedding_tokens = Counter(
            "edgellm_embedding_tokens", "Tokens embedded (/v1/embeddings)", ["model"], registry=r
        )
        self.embedding_latency = Histogram(
            "edgellm_embedding_request_seconds",
            "An embeddings request from routing to its vectors",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        r.register(_ProcessCollector(queue_state))
        self._request_counters: dict[tuple[str, str, int], Counter] = {}

    def observe_finished(self, model: str, done: Finished) -> None:
        if done.reason is FinishReason.CANCELLED:
            self.cancelled.labels(model).inc()
        self.observe_generation(model, done.timings, done.completion_tokens)

    def observe_generation(self, model: str, timings: Timings, completion_tokens: int) -> None:
        self.prompt_tokens.labels(model).inc(timings.prompt_n + timings.cache_n)
        self.cached_prompt_tokens.labels(model).inc(timings.cache_n)
        self.generation_tokens.labels(model).inc(completion_tokens)
        self.queue_wait.labels(model).observe(timings.queue_ms / 1e3)
        self.e2e.labels(model).observe(timings.total_ms / 1e3)
        if completion_tokens > 0:
            self.ttft.labels(model).observe(timings.ttft_ms / 1e3)
        if timings.prompt_per_second > 0:
            self.prefill_rate.labels(model).observe(timings.prompt_per_second)
        if timings.predicted_per_second > 0:
            self.decode_rate.labels(model).observe(timings.predicted_per_second)

    def observe_embeddings(self, model: str, inputs: int, tokens: int, seconds: float) -> None:
        label = self._model_labels.get(model, UNKNOWN_MODEL)
        self.embedding_inputs.labels(label).inc(inputs)
        self.embedding_tokens.labels(label).inc(tokens)
        self.embedding_latency.labels(label).observe(seconds)

    def count(self, endpoint: str, model: str, status: int) -> None:
        key = (endpoint, self._model_labels.get(model, UNKNOWN_MODEL), status)
        child = self._request_counters.get(key)
        if child is None:  # labels() takes a lock on every call: look each child up once
            child = self._request_counters[key] = self.requests.labels(key[0], key[1], str(status))
        child.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
