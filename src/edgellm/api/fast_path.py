"""Chat and text completions as plain ASGI in front of FastAPI: the hot path of the node and the
gateway, with the same checks, answers and metrics as the whole stack (a parity test in
tests/unit/api/test_fast_path_parity.py sends the same requests both ways).

FastAPI's own request handling (middleware stack, dependency solving, request-model machinery)
costs more per request than routing and rendering together; this path does the few things the
middleware does, in the same order, and validates the body once from its bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgellm.api.error_handlers import edgellm_error_response, error_response
from edgellm.api.limits import declared_too_large, reject_too_large
from edgellm.api.server_metrics import Metrics
from edgellm.errors import EdgeLLMError
from edgellm.gateway.auth import ApiKeyAuth
from edgellm.wire.schemas import ChatCompletionRequest, CompletionRequest

log = logging.getLogger(__name__)

GenerationBody = ChatCompletionRequest | CompletionRequest
GenerationHandler = Callable[[GenerationBody, Request], Awaitable[Response]]
FastRoutes = dict[str, tuple[type[GenerationBody], GenerationHandler]]


def _is_json(content_type: bytes) -> bool:
    """As FastAPI decides whether to parse a body as JSON (application/json, application/*+json)."""
    mime = content_type.split(b";", 1)[0].strip().lower()
    return mime == b"application/json" or (
        mime.startswith(b"application/") and mime.endswith(b"+json")
    )


class FastGeneration:
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


class FastApp(FastAPI):
    """FastAPI, with chat and text completions answered by `fast` before its middleware
    stack (unless FastAPI's native OpenTelemetry instrumentation is on: then every request
    goes through the stack, to be traced)."""

    fast: FastGeneration | None = None

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


async def unreachable(scope: Scope, receive: Receive, send: Send) -> None:
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
