"""The router: model names and policies → an ordered list of replicas → a started stream.

A policy decides which models to try, in which order; the router executes that choice
(`execute`). Policies see the router only through `PolicyContext` (policies/base.py).

Reliability lives here: replicas whose circuit is open are skipped; connection errors, 5xx,
timeouts and a saturated replica (429) move on to the next replica, then the next model
(edge → edge → cloud), with backoff between rounds, but only before the first token: once a token
has been sent, the stream is committed to its replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from edgellm.config import (
    TIERS,
    EdgeLLMConfig,
    HttpBackendConfig,
    ModelConfig,
    RouterSettings,
)
from edgellm.engine.embedding import EmbeddingResult
from edgellm.engine.pool import EnginePool
from edgellm.engine.types import Failed, Finished, GenerationEvent
from edgellm.errors import (
    ContextLengthExceededError,
    EdgeLLMError,
    InvalidRequestError,
    ModelNotFoundError,
    NotReadyError,
    OverloadedError,
)
from edgellm.gateway.affinity import AnswerText, ReplicaAffinity
from edgellm.gateway.backends.base import Backend
from edgellm.gateway.backends.dns import replica_urls, resolve_addresses
from edgellm.gateway.backends.http import HttpBackend
from edgellm.gateway.backends.local import LocalBackend
from edgellm.gateway.conversations import trim
from edgellm.gateway.errors import (
    EmbeddingsUnsupported,
    NoBackendError,
    UpstreamError,
    detail,
    outcome_of,
)
from edgellm.gateway.health import ReplicaState
from edgellm.gateway.metrics import GatewayMetrics
from edgellm.gateway.request import GatewayRequest
from edgellm.gateway.route import Candidate, Route, StartedAnswer, down_error
from edgellm.gateway.streams import BufferedEvents, ReplayStream
from edgellm.gateway.upstream import HttpClient
from edgellm.wire.embeddings import EmbeddingRequest

log = logging.getLogger(__name__)

DEFAULT_REPLY_BUDGET = 256  # tokens kept free for the answer when max_tokens is not given
LOCAL_SATURATION = 4  # outstanding requests before an in-process engine counts as saturated


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, UpstreamError):
        return exc.retryable
    return isinstance(exc, OverloadedError | NotReadyError | TimeoutError) or not isinstance(
        exc, EdgeLLMError
    )


class Router:
    def __init__(
        self,
        config: EdgeLLMConfig,
        pool: EnginePool | None,
        *,
        client: httpx.AsyncClient | None = None,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        from edgellm.gateway.policies import build_policies

        self.config = config
        self.settings: RouterSettings = config.router
        self.pool = pool
        self.metrics = metrics or GatewayMetrics()
        self._client = client
        self._own_client = client is None
        self.upstream = HttpClient()  # the lean client for generation requests
        self.models: dict[str, Candidate] = {}
        self.names: dict[str, str] = {}
        self.affinity: dict[str, ReplicaAffinity] = {}  # by model name: views share it
        self._tasks: list[asyncio.Task[None]] = []
        for m in config.models:
            rm = Candidate(m.name, m.tier, m.cost_per_1k_tokens, m.context_length)
            rm.serves = tuple(m.serves)
            if pool is not None:
                rm.replicas.append(LocalBackend(pool, m.name, self._state(LOCAL_SATURATION)))
            self._add(rm, m.aliases)
        for r in config.remote_models:
            rm = Candidate(r.name, r.tier, r.cost_per_1k_tokens, r.context_length)
            rm.serves = tuple(r.serves)
            for b in r.backends:
                rm.upstream_model = b.model or r.name
                if b.dns:
                    rm.dns.append(b)
                for url in b.static_urls():
                    rm.replicas.append(self._http(url, b, b.model or r.name))
            self._add(rm, r.aliases)
        self.policies = build_policies(config, self)

    @classmethod
    def from_pool(cls, pool: EnginePool) -> Router:
        models = [
            ModelConfig(name=n, source=n, aliases=pool.aliases(n), serves=pool.serves(n))
            for n in pool.model_names
        ]
        return cls(EdgeLLMConfig(models=models), pool)

    def _state(self, max_concurrency: int) -> ReplicaState:
        s = self.settings
        return ReplicaState(max_concurrency, s.failure_threshold, s.cooldown_s)

    def _http(self, url: str, cfg: HttpBackendConfig, upstream: str) -> HttpBackend:
        state = self._state(cfg.max_concurrency)
        return HttpBackend(url, upstream, cfg, self.client, state, self.upstream)

    def _add(self, model: Candidate, aliases: list[str]) -> None:
        self.models[model.name] = model
        model.affinity = self.affinity[model.name] = ReplicaAffinity(
            model.name, self.settings.affinity, self.metrics
        )
        for key in (model.name, *aliases):
            self.names[key] = model.name

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
            self._client = httpx.AsyncClient(limits=limits, timeout=None)
        return self._client

    def candidates(self, names: Sequence[str] = ()) -> list[Candidate]:
        """The models named (every model that generates if none), smallest tier first."""
        chosen = [self.models[n] for n in names] if names else list(self.models.values())
        chosen = [m for m in chosen if "generation" in m.serves]
        return sorted(chosen, key=lambda m: TIERS.index(m.tier))

    # -- background: active health checks, DNS re-resolution -------------------------------

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._health_loop(), name="gateway-health"))
        for model in self.models.values():
            for cfg in model.dns:
                await self.refresh_dns(model, cfg)
                task = asyncio.create_task(self._dns_loop(model, cfg), name=f"dns-{model.name}")
                self._tasks.append(task)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.upstream.close()
        if self._own_client and self._client is not None:
            await self._client.aclose()

    async def check_all(self) -> None:
        # Only replicas with a health path are checked: a check that asks nothing would pass
        # every time and close the circuit of a replica that is down.
        replicas = [
            r
            for m in self.models.values()
            for r in m.replicas
            if isinstance(r, HttpBackend) and r.config.health_path is not None
        ]
        results = await asyncio.gather(*(r.check_health() for r in replicas))
        for replica, ok in zip(replicas, results, strict=True):
            if ok != replica.state.healthy:
                log.warning("replica %s is %s", replica.id, "healthy" if ok else "unhealthy")
            replica.state.record_health(ok)

    async def _health_loop(self) -> None:
        while True:
            try:
                await self.check_all()
            except Exception:
                log.exception("health check failed")
            await asyncio.sleep(self.settings.health_interval_s)

    async def refresh_dns(self, model: Candidate, cfg: HttpBackendConfig) -> None:
        assert cfg.dns is not None
        addresses = await resolve_addresses(cfg.dns, cfg.port)
        if not addresses:
            return  # keep the last known replicas rather than none
        urls = replica_urls(addresses, scheme=cfg.scheme, port=cfg.port, path=cfg.path)
        current = {r.id: r for r in model.replicas if isinstance(r, HttpBackend)}
        static = [r for r in model.replicas if not (isinstance(r, HttpBackend) and r.config is cfg)]
        fresh: list[Backend] = []
        for url in urls:
            kept = current.get(url.rstrip("/"))
            fresh.append(kept if kept is not None else self._http(url, cfg, model.upstream_model))
        model.replicas = static + fresh

    async def _dns_loop(self, model: Candidate, cfg: HttpBackendConfig) -> None:
        while True:
            await asyncio.sleep(cfg.resolve_interval_s)
            await self.refresh_dns(model, cfg)

    # -- routing ----------------------------------------------------------------------------

    async def route(self, call: GatewayRequest) -> StartedAnswer:
        name = call.body.model
        private_header = call.headers.get("x-edgellm-private", "").lower()
        call.private = private_header in {"1", "true", "yes"}
        if name == "auto":
            name = self.settings.default_policy
        policy = self.policies.get(name)
        if policy is not None:
            info = Route(policy=name)
            info.signals["private_header"] = call.private
            return await policy.route(call, info)
        canonical = self.names.get(name)
        if canonical is None:
            known = list(dict.fromkeys([*self.names, *self.policies, "auto"]))
            raise ModelNotFoundError.unknown(name, known)
        model = self.models[canonical]
        if "generation" not in model.serves:
            raise InvalidRequestError(
                f"'{name}' is an embedding model: it serves /v1/embeddings only", param="model"
            )
        return await self.execute(call, [model], Route())

    async def embed(
        self, body: EmbeddingRequest, headers: Mapping[str, str]
    ) -> tuple[EmbeddingResult, Route]:
        """Embeddings from a replica of the model named: explicit names and aliases only (a
        policy would choose between models whose vectors are not comparable). Replicas are
        tried as for generation (open circuits skipped, failover on connection errors, 5xx
        and 429); one that has no embeddings endpoint is skipped without counting a failure."""
        name = body.model
        if name == "auto" or name in self.policies:
            raise InvalidRequestError(
                f"embeddings need a model name, not the policy '{name}': each model's vectors "
                "are its own, so a routed choice would mix incomparable spaces",
                param="model",
            )
        canonical = self.names.get(name)
        if canonical is None:
            raise ModelNotFoundError.unknown(name, list(self.names))
        model = self.models[canonical]
        if "embeddings" not in model.serves:
            able = [m.name for m in self.models.values() if "embeddings" in m.serves]
            raise InvalidRequestError(
                f"'{name}' does not serve embeddings; models that do: {', '.join(able) or 'none'}",
                param="model",
            )
        private = headers.get("x-edgellm-private", "").lower() in {"1", "true", "yes"}
        if private and not model.is_edge:
            raise NoBackendError(f"a private request may not leave the edge, and {name} is not")
        info = Route()
        info.model, info.tier = model.name, model.tier
        last: EdgeLLMError | None = None
        unsupported = 0
        for round_ in range(self.settings.retries + 1):
            if round_:
                await asyncio.sleep(self.settings.backoff_s * 2 ** (round_ - 1))
            now = time.monotonic()
            replicas = [r for r in model.ordered_replicas() if r.state.available(now)]
            if not replicas:
                raise down_error([model])
            worth_retrying = False
            for replica in replicas:
                t0 = time.perf_counter()
                replica.state.outstanding += 1
                try:
                    result = await replica.embed(body)
                except EmbeddingsUnsupported as exc:
                    unsupported += 1
                    info.hop(model.name, replica.id, "rejected", t0, error=exc.message[:300])
                    log.warning("%s does not serve embeddings: %s", replica.id, exc.detail)
                    continue
                except EdgeLLMError as exc:
                    outcome = outcome_of(exc)
                    self.metrics.count_attempt(model.name, replica.id, outcome)
                    info.hop(model.name, replica.id, outcome, t0, error=exc.message[:300])
                    if not _retryable(exc):
                        raise
                    if outcome in {"error", "timeout"}:
                        replica.state.record_failure(_short(exc))
                    last = exc
                    worth_retrying |= not isinstance(exc, OverloadedError)
                    continue
                finally:
                    replica.state.outstanding -= 1
                replica.state.record_success(None, time.perf_counter() - t0)
                self.metrics.count_attempt(model.name, replica.id, "ok")
                info.hop(model.name, replica.id, "ok", t0)
                info.replica = replica.id
                return result, info
            if not worth_retrying:
                break
        if last is None and unsupported:
            raise InvalidRequestError(
                f"no replica of '{name}' serves embeddings (each answered that it has no "
                "embeddings endpoint)",
                param="model",
            )
        if isinstance(last, OverloadedError) or (last is not None and len(model.replicas) == 1):
            raise last
        raise NoBackendError(f"no replica of {name} could take the request: {last}")

    def remote_model(self, name: str) -> Candidate | None:
        """The model behind `name` if it is served over HTTP (None: in-process or unknown)."""
        model = self.models.get(self.names.get(name, ""))
        if model is None or any(r.kind == "engine" for r in model.replicas):
            return None
        return model

    async def forward(
        self, model: Candidate, path: str, payload: dict[str, Any], *, under_v1: bool = True
    ) -> tuple[int, Any]:
        """POST a non-generation request (log-likelihood, tokenize) to the first replica that
        answers, failing over on connection errors and 5xx. Returns (status, JSON body)."""
        last = "no replica"
        for replica in model.ordered_replicas():
            if not isinstance(replica, HttpBackend):
                continue
            base = replica.base_url if under_v1 else replica.base_url.removesuffix("/v1")
            body = payload | {"model": replica.upstream_model}
            try:
                r = await self.client.post(
                    base + path, json=body, headers=replica.auth_headers(), timeout=600.0
                )
            except httpx.HTTPError as exc:
                replica.state.record_failure(_short(exc))
                last = type(exc).__name__
                log.warning("%s %s: %s", replica.id, path, detail(exc))
                continue
            if r.status_code >= 500:
                last = f"answered {r.status_code}"
                log.warning("%s %s answered %d", replica.id, path, r.status_code)
                continue
            try:
                return r.status_code, r.json()
            except ValueError:
                last = "not JSON"
                log.warning("%s %s: the answer is not JSON", replica.id, path)
        raise NoBackendError(f"no replica of {model.name} answered {path}: {last}")

    def ordered(self, model: Candidate, call: GatewayRequest, info: Route) -> list[Backend]:
        """The model's replicas in the order to try: cache-aware (gateway/affinity.py)."""
        affinity = self.affinity.get(model.name)
        if affinity is None or len(model.replicas) < 2 or not affinity.settings.enabled:
            return model.ordered_replicas()
        return affinity.order(model.replicas, call, info)

    async def execute(
        self, call: GatewayRequest, models: list[Candidate], info: Route, *, fallback: bool = True
    ) -> StartedAnswer:
        """Start the generation on the first replica that takes it, in the order given."""
        if call.private:
            models = [m for m in models if m.is_edge]
            if not models:
                raise NoBackendError(
                    "a private request may not leave the edge, and no edge "
                    "model is configured for it"
                )
        last: Exception | None = None
        for round_ in range(self.settings.retries + 1):
            if round_:
                await asyncio.sleep(self.settings.backoff_s * 2 ** (round_ - 1))
            worth_retrying = False
            targets = [(m, r) for m in models for r in self.ordered(m, call, info)]
            targets = self._capable(targets, call, info)
            now = time.monotonic()
            available = [(m, r) for m, r in targets if r.state.available(now)]
            if not available:
                # Every replica failed its health checks or has an open circuit (a partitioned
                # cloud link, say): answer 503 now rather than wait out connect timeouts.
                raise down_error(models)
            targets = available
            for model, replica in targets:
                try:
                    return await self._attempt(call, model, replica, info)
                except ContextLengthExceededError as exc:
                    if not fallback or len(models) == 1:
                        raise
                    last = exc  # a larger window further down the list may fit
                except EdgeLLMError as exc:
                    if not _retryable(exc):
                        raise
                    last = exc
                    worth_retrying |= not isinstance(exc, OverloadedError)
                    self.metrics.fallbacks.labels(model.name, replica.id).inc()
            if not worth_retrying:
                break
        if isinstance(last, EdgeLLMError) and len(models) == 1 and len(models[0].replicas) <= 1:
            raise last
        if isinstance(last, OverloadedError | ContextLengthExceededError):
            raise last
        names = ", ".join(m.name for m in models)
        raise NoBackendError(f"no replica of {names} could take the request: {last}")

    def _capable(
        self, targets: list[tuple[Candidate, Backend]], call: GatewayRequest, info: Route
    ) -> list[tuple[Candidate, Backend]]:
        """The replicas that honour everything the request needs (the others would answer it
        while ignoring a part of it); a 400 naming the field if none does."""
        needs = call.body.needs()
        if not needs:
            return targets
        lacking = [r.lacks(needs) for _, r in targets]
        capable = [t for t, lacks in zip(targets, lacking, strict=True) if not lacks]
        skipped = [r.id for (_, r), lacks in zip(targets, lacking, strict=True) if lacks]
        if skipped:
            info.signals["skipped_for_features"] = skipped
        if capable:
            return capable
        missing = sorted(set().union(*lacking))
        names = ", ".join(dict.fromkeys(m.name for m, _ in targets))
        raise InvalidRequestError(
            f"no replica of {names} honours {', '.join(missing)} (its `supports` setting)",
            param=_FEATURE_FIELDS[missing[0]],
        )

    async def _attempt(
        self, call: GatewayRequest, model: Candidate, replica: Backend, info: Route
    ) -> StartedAnswer:
        t0 = time.perf_counter()
        if call.history is not None:
            self._fit_history(call, model, replica, info)
        state = replica.state
        state.outstanding += 1
        affinity = self.affinity.get(model.name)
        if affinity is not None:
            affinity.sending(replica.id, call)
        timeout = replica.first_event_timeout(call)
        stream = None
        try:
            async with asyncio.timeout(timeout):
                stream, echo = await replica.open(call)
                if isinstance(stream, BufferedEvents):  # a whole answer, already parsed
                    events, prefix = None, list(stream.events)
                    if not prefix:
                        raise StopAsyncIteration
                else:
                    events = stream.__aiter__()
                    prefix = [await events.__anext__()]
                first = prefix[0]
            if isinstance(first, Failed):
                err = first.error
                raise err if isinstance(err, EdgeLLMError) else UpstreamError(str(err))
        except BaseException as exc:
            state.outstanding -= 1
            if affinity is not None:
                affinity.abandoned(call)
            if stream is not None:
                stream.cancel()
            if isinstance(exc, asyncio.CancelledError):
                raise
            failure: EdgeLLMError
            if isinstance(exc, TimeoutError | StopAsyncIteration):
                failure = UpstreamError(
                    f"no first token within {timeout} s"
                    if timeout == replica.first_token_timeout_s
                    else f"request timed out (no answer within {timeout} s)",
                    status=504,
                    source=replica.id,
                )
            elif isinstance(exc, EdgeLLMError):
                failure = exc
            else:
                failure = UpstreamError(type(exc).__name__, source=replica.id, cause=str(exc))
            outcome = outcome_of(failure)
            self.metrics.count_attempt(model.name, replica.id, outcome)
            info.hop(model.name, replica.id, outcome, t0, error=failure.message[:300])
            if outcome in {"error", "timeout"}:
                state.record_failure(_short(failure))
                log.warning("%s failed before its first token: %s", model.name, _short(failure))
            raise failure from None

        answer = AnswerText() if affinity is not None and affinity.keeps(call) else None

        def on_end(last: GenerationEvent | None) -> None:
            state.outstanding -= 1
            if affinity is not None:
                affinity.finished(
                    replica.id, call, last, answer.text if answer is not None else None
                )
            elapsed = time.perf_counter() - t0
            if isinstance(last, Finished):
                state.record_success(last.timings, elapsed)
                self.metrics.observe_e2e(model.name, time.perf_counter() - info.started)
                self.metrics.count_attempt(model.name, replica.id, "ok")
            elif isinstance(last, Failed):
                state.record_failure(_short(last.error))
                self.metrics.count_attempt(model.name, replica.id, "error")

        self.metrics.observe_ttft(model.name, time.perf_counter() - info.started)
        info.hop(model.name, replica.id, "ok", t0, first_event_ms=_ms(t0))
        if affinity is not None:
            affinity.routed(replica.id, call)
        info.model, info.tier, info.replica = model.name, model.tier, replica.id
        return StartedAnswer(
            ReplayStream(
                prefix, events, stream, on_end, answer.add if answer is not None else None
            ),
            model,
            replica,
            echo,
            info,
        )

    def _fit_history(
        self, call: GatewayRequest, model: Candidate, replica: Backend, info: Route
    ) -> None:
        assert call.history is not None
        window = model.window()
        if window is None:
            call.messages = list(call.history)
            return
        budget = window - (call.max_tokens or DEFAULT_REPLY_BUDGET)
        call.messages = trim(call.history, budget, replica.count_tokens)
        info.signals["conversation"] = {
            "turns": len(call.history),
            "kept": len(call.messages),
            "window": window,
        }


# the request field that asks for each feature, named in the 400 when no replica has it
_FEATURE_FIELDS: dict[str, str] = {
    "logprobs": "logprobs",
    "echo": "echo",
    "structured_output": "response_format",
    "grammar": "grammar",
    "tools": "tools",
}


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1e3, 3)


def _short(exc: BaseException) -> str:
    return detail(exc)[:300]
