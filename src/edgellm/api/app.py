"""The OpenAI-compatible HTTP application for the models of one process."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgellm import __version__
from edgellm.api import generation
from edgellm.api.errors import install_error_handlers
from edgellm.api.limits import BodySizeLimit
from edgellm.api.metrics import Metrics
from edgellm.api.schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    DetokenizeRequest,
    LoglikelihoodOut,
    LoglikelihoodRequestBody,
    LoglikelihoodResponse,
    ModelCard,
    ModelList,
    TokenizeRequest,
)
from edgellm.config import ServerConfig
from edgellm.engine.engine import Engine
from edgellm.engine.pool import EnginePool, PoolState

log = logging.getLogger(__name__)

_ENDPOINTS = {
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/models",
    "/v1/loglikelihood",
    "/tokenize",
    "/detokenize",
    "/health",
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


def create_app(pool: EnginePool, server: ServerConfig | None = None) -> FastAPI:
    server = server or ServerConfig()
    metrics = Metrics(pool.queue_state)
    pool.add_finish_listener(metrics.observe_finished)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if pool.state is PoolState.LOADING:
            pool.load_in_background()
        yield
        pool.close()

    app = FastAPI(title="EdgeLLM", version=__version__, lifespan=lifespan)
    app.state.pool = pool
    app.state.metrics = metrics
    install_error_handlers(app)
    app.add_middleware(_CountRequests, metrics=metrics)
    app.add_middleware(BodySizeLimit, max_bytes=server.max_body_bytes)

    def engine_for(request: Request, model: str) -> Engine:
        request.state.model = model
        return pool.get(model)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(
        body: ChatCompletionRequest, request: Request
    ) -> ChatCompletion | StreamingResponse:
        engine = engine_for(request, body.model)
        return await generation.chat_completions(body, request, engine)

    @app.post("/v1/completions", response_model=None)
    async def completions(
        body: CompletionRequest, request: Request
    ) -> Completion | StreamingResponse:
        engine = engine_for(request, body.model)
        return await generation.completions(body, request, engine)

    @app.post("/v1/loglikelihood")
    async def loglikelihood(
        body: LoglikelihoodRequestBody, request: Request
    ) -> LoglikelihoodResponse:
        engine = engine_for(request, body.model)
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
        return engine_for(request, model or pool.model_names[0])

    @app.post("/tokenize")
    async def tokenize(body: TokenizeRequest, request: Request) -> dict[str, list[int]]:
        engine = default_engine(request, body.model)
        return {"tokens": engine.tokenize(body.content, add_special=body.add_special)}

    @app.post("/detokenize")
    async def detokenize(body: DetokenizeRequest, request: Request) -> dict[str, str]:
        engine = default_engine(request, body.model)
        return {"content": engine.detokenize(body.tokens)}

    @app.get("/v1/models")
    async def list_models() -> ModelList:
        cards = []
        for name in pool.model_names:
            meta: dict[str, object] = {"aliases": pool.aliases(name), "state": pool.state.value}
            try:
                info = pool.get(name).info
                meta |= {
                    "n_ctx": info.n_ctx,
                    "n_ctx_train": info.n_ctx_train,
                    "n_vocab": info.n_vocab,
                    "n_threads": info.n_threads,
                    "path": str(info.path),
                }
            except Exception:
                meta["state"] = pool.state.value
            cards.append(ModelCard(id=name, created=pool.created, meta=meta))
        return ModelList(data=cards)

    @app.get("/health")
    async def health() -> JSONResponse:
        if pool.state is PoolState.READY:
            return JSONResponse({"status": "ok", "models": pool.model_names})
        body: dict[str, object] = {"status": pool.state.value}
        if pool.error:
            body["error"] = pool.error
        return JSONResponse(body, status_code=503)

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app
