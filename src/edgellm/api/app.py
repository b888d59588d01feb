"""The OpenAI-compatible HTTP application for the models of one process."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import generate_latest
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgellm import __version__
from edgellm.api import generation, openapi
from edgellm.api.errors import edgellm_error_response, error_response, install_error_handlers
from edgellm.api.feedback import feedback_routes, save_thresholds, thresholds_state
from edgellm.api.limits import BodySizeLimit, declared_too_large, reject_too_large
from edgellm.api.metrics import Metrics
from edgellm.api.schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    DetokenizeRequest,
    DetokenizeResponse,
    HealthResponse,
    LoglikelihoodOut,
    LoglikelihoodRequestBody,
    LoglikelihoodResponse,
    ModelCard,
    ModelList,
    TokenizeRequest,
    TokenizeResponse,
)
from edgellm.config import ServerConfig
from edgellm.engine.engine import Engine, off_loop
from edgellm.engine.pool import EnginePool, PoolState
from edgellm.errors import EdgeLLMError, InvalidRequestError
from edgellm.gateway.auth import TOKEN_METER, ApiKeyAuth
from edgellm.gateway.call import Call
from edgellm.gateway.conversations import Conversations
from edgellm.gateway.router import Router

log = logging.getLogger(__name__)

_ENDPOINTS = {
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/models",
    "/v1/loglikelihood",
    "/tokenize",
    "/detokenize",
    "/health",
    "/v1/router",
    "/v1/feedback",
}


class _CountRequests:
    """Counts every answered request by endpoint, model and status, errors included."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") not in _ENDPOINTS:
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.metrics.count(scope["path"], state.get("model", ""), message["status"])
            await send(message)

        await self.app(scope, receive, counting_send)


GenerationBody = ChatCompletionRequest | CompletionRequest
GenerationHandler = Callable[[GenerationBody, Request], Awaitable[Response]]
FastRoutes = dict[str, tuple[type[GenerationBody], GenerationHandler]]


def _is_json(content_type: bytes) -> bool:
    """As FastAPI decides whether to parse a body as JSON (application/json, application/*+json)."""
    mime = content_type.split(b";", 1)[0].strip().lower()
    return mime == b"application/json" or (
        mime.startswith(b"application/") and mime.endswith(b"+json")
    )


class _FastGeneration:
    """Chat and text completions as plain ASGI, in front of FastAPI (the hot path of the
    gateway). It does in one place what the middleware chain does for every other request, in
    the same order: the declared body size (413), the API key and its rate limit (401/429,
    counted), the body read with its size counted (413), then the request counter around the
    answer. The body is validated once, straight from its bytes (`model_validate_json`), with no
    dependency solving or request-model machinery. Anything unusual (a body that does not
    validate, a non-JSON content type) is handed to the whole FastAPI stack with the body
    replayed and the key marked as checked, so error answers stay exactly FastAPI's."""

    def __init__(
        self,
        app: ASGIApp,
        routes: FastRoutes,
        *,
        metrics: Metrics,
        auth: ApiKeyAuth,
        max_bytes: int,
    ) -> None:
        self.app = app  # the whole FastAPI stack
        self.routes = routes
        self.metrics = metrics
        self.auth = auth
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.routes[scope["path"]]
        if declared_too_large(scope, self.max_bytes):
            await reject_too_large(send, self.max_bytes)
            return
        state = scope.setdefault("state", {})
        metrics = self.metrics

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                metrics.count(scope["path"], state.get("model", ""), message["status"])
            await send(message)

        if not await self.auth.admit(scope, counting_send):
            return
        for name, value in scope["headers"]:
            if name == b"content-type" and not _is_json(value):
                await self.app(scope, receive, send)
                return
        chunks = []
        seen = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left while sending
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                await reject_too_large(send, self.max_bytes)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        model, handler = route
        try:
            body = model.model_validate_json(raw)
        except ValidationError:
            await self.app(scope, _replay(raw, receive), send)
            return
        request = Request(scope, receive)
        response: Response
        try:
            response = await handler(body, request)
        except EdgeLLMError as exc:
            if exc.status_code >= 500 and exc.status_code != 503:
                log.error("request failed: %s", exc.message)
            response = edgellm_error_response(exc)
        except Exception as exc:
            log.exception("unexpected error")
            response = error_response(
                500, f"internal error: {type(exc).__name__}", code="internal_error"
            )
        await response(scope, receive, counting_send)


class _App(FastAPI):
    """FastAPI, with chat and text completions answered by `fast` before its middleware
    stack (unless FastAPI's native OpenTelemetry instrumentation is on: then every request
    goes through the stack, to be traced)."""

    fast: _FastGeneration | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.fast
        if (
            fast is not None
            and scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] in fast.routes
            and not self._telemetry_on()
        ):
            if self.root_path:
                scope["root_path"] = self.root_path
            scope["app"] = self
            await fast(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def stack(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The whole FastAPI app, middleware and routing (what `fast` hands on)."""
        await super().__call__(scope, receive, send)

    _telemetry_seen_off: tuple[object, ...] | None = None  # OTel's providers when it was off

    def _telemetry_on(self) -> bool:
        telemetry = getattr(self, "_native_telemetry", None)  # FastAPI >= 0.130
        if telemetry is None:
            return False
        # enabled() asks OpenTelemetry for its three global providers (an environment lookup
        # each, ~6 us): while none of them has been set since it said no, the answer stands
        providers = _otel_providers()
        if providers is not None and providers == self._telemetry_seen_off:
            return False
        on = bool(telemetry.enabled())
        self._telemetry_seen_off = None if on else _otel_providers()
        return on


def _otel_providers() -> tuple[object, ...] | None:
    """OpenTelemetry's global tracer, meter and logger providers (each set once, by code or on
    first use from its OTEL_PYTHON_*_PROVIDER variable); None if they cannot be read."""
    if _otel_modules is None:
        return None
    try:
        return tuple(getattr(module, name) for module, name in _otel_modules)
    except AttributeError:
        return None


try:
    import opentelemetry._logs._internal as _otel_logs
    import opentelemetry.metrics._internal as _otel_metrics
    import opentelemetry.trace as _otel_trace

    _otel_modules: tuple[tuple[object, str], ...] | None = (
        (_otel_trace, "_TRACER_PROVIDER"),
        (_otel_metrics, "_METER_PROVIDER"),
        (_otel_logs, "_LOGGER_PROVIDER"),
    )
except ImportError:  # pragma: no cover - FastAPI without OpenTelemetry
    _otel_modules = None


async def _unreachable(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("only ApiKeyAuth.admit() is used on the fast path")


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def create_app(target: EnginePool | Router, server: ServerConfig | None = None) -> FastAPI:
    """The app for an engine pool (every model explicit, plus `auto`), or for a gateway router."""
    server = server or ServerConfig()
    router = Router.from_pool(target) if isinstance(target, EnginePool) else target
    pool = router.pool
    metrics = Metrics(
        pool.queue_state if pool is not None else list,
        model_names=[*router.names, *router.policies, "auto"],
    )
    if pool is not None:
        pool.add_finish_listener(metrics.observe_finished)
    conversations = Conversations(router.settings.conversations)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if pool is not None and pool.state is PoolState.LOADING:
            pool.load_in_background()
        await router.start()
        yield
        await router.close()
        save_thresholds(router)
        if pool is not None:
            pool.close()

    app = _App(title="EdgeLLM", version=__version__, lifespan=lifespan)
    app.state.pool = pool
    app.state.router = router
    app.state.metrics = metrics
    install_error_handlers(app)
    openapi.install(app, streamed=(ChatCompletionChunk, Completion))

    async def chat(body: GenerationBody, request: Request) -> Response:
        assert isinstance(body, ChatCompletionRequest)
        call = make_call(body, request)
        meter = request.scope.get(TOKEN_METER)
        cid = body.conversation_id
        if cid is None:
            return await generation.chat_completions(body, request, router, call, on_usage=meter)
        call.history = conversations.merge(cid, call.messages or [])

        def remember(reply: str) -> None:
            conversations.record(cid, call.messages or [], reply)

        return await generation.chat_completions(
            body, request, router, call, remember, on_usage=meter
        )

    async def complete(body: GenerationBody, request: Request) -> Response:
        assert isinstance(body, CompletionRequest)
        call = make_call(body, request)
        meter = request.scope.get(TOKEN_METER)
        return await generation.completions(body, request, router, call, on_usage=meter)

    fast_routes: FastRoutes = {
        "/v1/chat/completions": (ChatCompletionRequest, chat),
        "/v1/completions": (CompletionRequest, complete),
    }
    # its checks, for the fast path
    auth = ApiKeyAuth(_unreachable, config=router.config.auth, metrics=router.metrics)
    app.fast = _FastGeneration(
        app.stack, fast_routes, metrics=metrics, auth=auth, max_bytes=server.max_body_bytes
    )
    app.add_middleware(ApiKeyAuth, config=router.config.auth, shared=auth)
    app.add_middleware(_CountRequests, metrics=metrics)
    app.add_middleware(BodySizeLimit, max_bytes=server.max_body_bytes)

    def local_engine(request: Request, model: str) -> Engine:
        request.state.model = model
        canonical = router.names.get(model)
        if pool is None or (canonical is not None and canonical not in pool.model_names):
            raise InvalidRequestError(
                f"'{model}' is served remotely by a server without this endpoint",
                param="model",
            )
        return pool.get(model)

    def make_call(body: ChatCompletionRequest | CompletionRequest, request: Request) -> Call:
        request.state.model = body.model
        # as {k.lower(): v for k, v in request.headers.items()}, without the Headers object
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.scope["headers"]
        }
        return Call.of(body, headers)

    # Served by _FastGeneration (app.fast); these routes answer what it hands on (invalid bodies,
    # other content types, every request while OpenTelemetry is on) and document the endpoints
    # in the OpenAPI schema.
    @app.post(
        "/v1/chat/completions",
        response_model=None,
        responses=openapi.generation(ChatCompletion, ChatCompletionChunk),
    )
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        return await chat(body, request)

    @app.post(
        "/v1/completions", response_model=None, responses=openapi.generation(Completion, Completion)
    )
    async def completions(body: CompletionRequest, request: Request) -> Response:
        return await complete(body, request)

    async def forwarded(
        request: Request, model: str | None, path: str, body: BaseModel, *, under_v1: bool
    ) -> JSONResponse | None:
        """Requests for a remote model go to one of its replicas (EdgeLLM nodes serve these
        endpoints; other servers answer 404, passed on as it is)."""
        remote = router.remote_model(model) if model else None
        if remote is None:
            return None
        request.state.model = model
        payload = body.model_dump(exclude_none=True)
        status, data = await router.forward(remote, path, payload, under_v1=under_v1)
        if isinstance(data, dict) and "model" in data:
            data["model"] = model
        return JSONResponse(data, status_code=status)

    @app.post(
        "/v1/loglikelihood",
        response_model=None,
        responses=openapi.answer(LoglikelihoodResponse),
    )
    async def loglikelihood(
        body: LoglikelihoodRequestBody, request: Request
    ) -> LoglikelihoodResponse | JSONResponse:
        remote = await forwarded(request, body.model, "/loglikelihood", body, under_v1=True)
        if remote is not None:
            return remote
        engine = local_engine(request, body.model)
        results = await engine.loglikelihood([(i.context, i.continuation) for i in body.items])
        return LoglikelihoodResponse(
            model=body.model,
            data=[
                LoglikelihoodOut(
                    index=n,
                    logprob=r.logprob,
                    is_greedy=r.is_greedy,
                    n_tokens=r.n_tokens,
                    token_logprobs=list(r.token_logprobs),
                )
                for n, r in enumerate(results)
            ],
        )

    def default_engine(request: Request, model: str | None) -> Engine:
        first = pool.model_names[0] if pool is not None else ""
        return local_engine(request, model or first)

    @app.post(
        "/tokenize",
        response_model=None,
        responses=openapi.answer(TokenizeResponse),
    )
    async def tokenize(
        body: TokenizeRequest, request: Request
    ) -> dict[str, list[int]] | JSONResponse:
        remote = await forwarded(request, body.model, "/tokenize", body, under_v1=False)
        if remote is not None:
            return remote
        engine = default_engine(request, body.model)
        content, special = body.content, body.add_special
        tokens = await off_loop(len(content), lambda: engine.tokenize(content, add_special=special))
        return {"tokens": tokens}

    @app.post(
        "/detokenize",
        response_model=None,
        responses=openapi.answer(DetokenizeResponse),
    )
    async def detokenize(
        body: DetokenizeRequest, request: Request
    ) -> dict[str, str] | JSONResponse:
        remote = await forwarded(request, body.model, "/detokenize", body, under_v1=False)
        if remote is not None:
            return remote
        engine = default_engine(request, body.model)
        return {"content": engine.detokenize(body.tokens)}

    @app.get("/v1/models", responses=openapi.errors(openapi.KEYED))
    async def list_models() -> ModelList:
        cards = []
        created = pool.created if pool is not None else 0
        for name, routed in router.models.items():
            aliases = [k for k, v in router.names.items() if v == name and k != name]
            meta: dict[str, object] = {
                "aliases": aliases,
                "tier": routed.tier,
                "cost_per_1k_tokens": routed.cost_per_1k_tokens,
            }
            if pool is not None and name in pool.model_names:
                meta["state"] = pool.state.value
                try:
                    info = pool.get(name).info
                    meta |= {
                        "n_ctx": info.n_ctx,
                        "n_ctx_train": info.n_ctx_train,
                        "n_vocab": info.n_vocab,
                        "n_threads": info.n_threads,
                        # the file's name, not where it lives on the server
                        "file": info.path.name,
                    }
                except Exception:
                    meta["state"] = pool.state.value
            else:
                meta["context_length"] = routed.context_length
                # how many, not where: replica addresses are for operators (/v1/router)
                meta["replicas"] = {
                    "total": len(routed.replicas),
                    "available": sum(r.state.available() for r in routed.replicas),
                }
            cards.append(ModelCard(id=name, created=created, meta=meta))
        return ModelList(data=cards)

    @app.get(
        "/health",
        response_model=None,
        responses=openapi.health(HealthResponse),
    )
    async def health() -> JSONResponse:
        if pool is None or pool.state is PoolState.READY:
            return JSONResponse({"status": "ok", "models": list(router.models)})
        body: dict[str, object] = {"status": pool.state.value}
        if pool.error:  # the reason (with file paths) is in the server log, for operators only
            body["error"] = "model loading failed; the server log says why"
        return JSONResponse(body, status_code=503)

    app.include_router(feedback_routes(router))

    @app.get("/v1/router", responses=openapi.errors(openapi.KEYED))
    async def router_state() -> JSONResponse:
        """EdgeLLM extension: every replica's health, circuit, load and measured speeds."""
        return JSONResponse(
            {
                "policies": {n: type(p).__name__ for n, p in router.policies.items()},
                "models": {
                    name: {
                        "tier": m.tier,
                        "replicas": {r.id: r.state.describe() for r in m.replicas},
                    }
                    for name, m in router.models.items()
                },
                "thresholds": thresholds_state(router),
            }
        )

    @app.get("/metrics", response_class=PlainTextResponse, responses=openapi.PROMETHEUS)
    async def prometheus_metrics() -> Response:
        text = metrics.render() + generate_latest(router.metrics.registry)
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    return app
