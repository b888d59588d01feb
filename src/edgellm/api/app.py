"""The OpenAI-compatible HTTP application for the models of one process."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import generate_latest
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgellm import __version__
from edgellm.api import completion_handlers, embeddings, openapi
from edgellm.api.error_handlers import install_error_handlers
from edgellm.api.fast_path import (
    FastApp,
    FastGeneration,
    FastRoutes,
    GenerationBody,
    unreachable,
)
from edgellm.api.feedback import feedback_routes, save_thresholds, thresholds_state
from edgellm.api.limits import BodySizeLimit
from edgellm.api.server_metrics import Metrics
from edgellm.config import ServerConfig
from edgellm.engine.engine import Engine, off_loop
from edgellm.engine.pool import EnginePool, PoolState
from edgellm.errors import InvalidRequestError
from edgellm.gateway.auth import TOKEN_METER, ApiKeyAuth
from edgellm.gateway.conversations import Conversations
from edgellm.gateway.request import GatewayRequest
from edgellm.gateway.router import Router
from edgellm.wire.embeddings import EmbeddingRequest, EmbeddingResponse
from edgellm.wire.schemas import (
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

log = logging.getLogger(__name__)

_ENDPOINTS = {
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/models",
    "/v1/loglikelihood",
    "/v1/embeddings",
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

    app = FastApp(title="EdgeLLM", version=__version__, lifespan=lifespan)
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
            return await completion_handlers.chat_completions(
                body, request, router, call, on_usage=meter
            )
        call.history = conversations.merge(cid, call.messages or [])

        def remember(reply: str) -> None:
            conversations.record(cid, call.messages or [], reply)

        return await completion_handlers.chat_completions(
            body, request, router, call, remember, on_usage=meter
        )

    async def complete(body: GenerationBody, request: Request) -> Response:
        assert isinstance(body, CompletionRequest)
        call = make_call(body, request)
        meter = request.scope.get(TOKEN_METER)
        return await completion_handlers.completions(body, request, router, call, on_usage=meter)

    fast_routes: FastRoutes = {
        "/v1/chat/completions": (ChatCompletionRequest, chat),
        "/v1/completions": (CompletionRequest, complete),
    }
    # its checks, for the fast path
    auth = ApiKeyAuth(unreachable, config=router.config.auth, metrics=router.metrics)
    app.fast = FastGeneration(
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

    def make_call(
        body: ChatCompletionRequest | CompletionRequest, request: Request
    ) -> GatewayRequest:
        request.state.model = body.model
        # as {k.lower(): v for k, v in request.headers.items()}, without the Headers object
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.scope["headers"]
        }
        return GatewayRequest.of(body, headers)

    # Served by FastGeneration (app.fast); these routes answer what it hands on (invalid bodies,
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

    @app.post("/v1/embeddings", response_model=None, responses=openapi.answer(EmbeddingResponse))
    async def create_embeddings(body: EmbeddingRequest, request: Request) -> Response:
        return await embeddings.embeddings(
            body, request, router, metrics, on_usage=request.scope.get(TOKEN_METER)
        )

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
                "serves": list(routed.serves),
            }
            if pool is not None and name in pool.model_names:
                meta["state"] = pool.state.value
                try:
                    if "generation" in routed.serves:
                        info = pool.get(name).info
                        meta |= {
                            "n_ctx": info.n_ctx,
                            "n_ctx_train": info.n_ctx_train,
                            "n_vocab": info.n_vocab,
                            "n_threads": info.n_threads,
                            # the file's name, not where it lives on the server
                            "file": info.path.name,
                        }
                    if "embeddings" in routed.serves:
                        e = pool.embedder(name).info
                        meta["embeddings"] = {
                            "n_embd": e.n_embd,
                            "n_ctx": e.n_ctx,
                            "pooling": e.pooling,
                            "normalized": True,
                        }
                        meta.setdefault("file", e.path.name)
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
