"""The HTTP handlers of chat and text completions: route through the gateway, answer whole or
as SSE (per-token engine state is `engine/generation.py`)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import Request, Response
from fastapi.responses import StreamingResponse

from edgellm.api.disconnect import DisconnectGuard
from edgellm.engine.types import (
    Failed,
    Finished,
    GenerationEvent,
    TextDelta,
    TokenLogprob,
    ToolCallDelta,
)
from edgellm.errors import EdgeLLMError
from edgellm.gateway.backends.base import EventStream
from edgellm.gateway.errors import UpstreamError
from edgellm.gateway.request import GatewayRequest
from edgellm.gateway.streams import ReplayStream
from edgellm.wire import encode
from edgellm.wire.encode import error_body
from edgellm.wire.schemas import ChatCompletionRequest, CompletionRequest

if TYPE_CHECKING:
    from edgellm.gateway.route import StartedAnswer
    from edgellm.gateway.router import Router

T = TypeVar("T")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
ROUTE_HEADER = "x-edgellm-route"


def _observe_routed(router: Router, routed: StartedAnswer) -> None:
    info = routed.info
    upstream_s = sum(h["ms"] for h in info.hops) / 1e3
    router.metrics.observe_overhead(max(time.perf_counter() - info.started - upstream_s, 0.0))
    router.metrics.count_routed(info.policy or "explicit", routed.model.name)


async def _route(router: Router, call: GatewayRequest) -> StartedAnswer:
    routed = await router.route(call)
    _observe_routed(router, routed)
    return routed


async def _watching(request: Request, work: Awaitable[T]) -> T:
    """Await `work`; a client that disconnects meanwhile cancels it (and its upstream work)."""
    guard = DisconnectGuard(request)
    try:
        return await work
    except asyncio.CancelledError:
        if guard.gone:
            raise guard.client_gone() from None
        raise
    finally:
        guard.stop()


async def route_watching(router: Router, call: GatewayRequest, request: Request) -> StartedAnswer:
    """Route `call`; a client that disconnects meanwhile cancels routing and upstream work."""
    return await _watching(request, _route(router, call))


def _add(got: encode.Collected, event: GenerationEvent) -> Finished | None:
    """One event of a whole answer into `got`: the final event is returned, a failure raised."""
    if isinstance(event, TextDelta):
        got.add(event)
    elif isinstance(event, ToolCallDelta):
        got.add_call(event)
    elif isinstance(event, Finished):
        return event
    elif isinstance(event, Failed):
        raise _as_edgellm_error(event.error)
    return None


async def _collect(stream: EventStream) -> tuple[encode.Collected, Finished]:
    got = encode.Collected()
    try:
        buffered = stream.take_to_end() if isinstance(stream, ReplayStream) else None
        if buffered is not None:  # a whole upstream answer: no need to iterate asynchronously
            for event in buffered:
                if (done := _add(got, event)) is not None:
                    return got, done
        else:
            async for event in stream:
                if (done := _add(got, event)) is not None:
                    return got, done
        raise EdgeLLMError("generation ended without a final event")
    finally:
        stream.cancel()


async def _route_and_collect(
    router: Router, call: GatewayRequest
) -> tuple[StartedAnswer, encode.Collected, Finished]:
    """A whole answer has sent nothing to the client yet, so an upstream that breaks mid-way
    (a replica killed under load) is retried from the start, on the next healthy replica."""
    routed = await _route(router, call)
    restarts = 0
    while True:
        try:
            got, done = await _collect(routed.stream)
            if restarts:
                routed.info.signals["restarts"] = restarts
            return routed, got, done
        except UpstreamError as exc:
            if not exc.retryable or restarts >= router.settings.retries:
                raise
            restarts += 1
            routed = await _route(router, call)


async def whole_answer(
    router: Router, call: GatewayRequest, request: Request
) -> tuple[StartedAnswer, encode.Collected, Finished]:
    """Route and collect a non-streamed answer; the client's disconnect cancels both."""
    return await _watching(request, _route_and_collect(router, call))


def _top(lps: tuple[TokenLogprob, ...] | list[TokenLogprob], k: int) -> list[TokenLogprob]:
    """The client's number of alternatives (a cascade may have asked the upstream for more)."""
    return [lp if len(lp.top) <= k else replace(lp, top=lp.top[:k]) for lp in lps]


def _as_edgellm_error(exc: Exception) -> EdgeLLMError:
    return exc if isinstance(exc, EdgeLLMError) else EdgeLLMError(f"generation failed: {exc}")


def _error_event(exc: Exception) -> bytes:
    err = _as_edgellm_error(exc)
    body = error_body(err.message, type_=err.error_type, param=err.param, code=err.code)
    return encode.sse(json.dumps(body))


def _response_model(body: ChatCompletionRequest | CompletionRequest, routed: StartedAnswer) -> str:
    # An explicit name (or alias) is echoed as sent, as OpenAI does; a policy names its choice.
    return body.model if routed.info.policy is None else routed.model.name


class JsonAnswer(Response):
    """A whole JSON answer, its body encoded and its headers known (Starlette's Response would
    parse a header mapping for each one)."""

    media_type = "application/json"

    def __init__(self, body: bytes, route_header: str) -> None:
        self.status_code = 200
        self.background = None
        self.body = body
        self.raw_headers = [
            (b"content-length", b"%d" % len(body)),
            (b"content-type", b"application/json"),
            (ROUTE_HEADER.encode(), route_header.encode("latin-1")),
        ]


OnFinish = Callable[[str], None]  # the whole answer's text (a conversation records it)
OnUsage = Callable[[int], None]  # the answer's prompt + completion tokens (a key's token limit)


def _charge(on_usage: OnUsage | None, done: Finished) -> None:
    if on_usage is not None:
        on_usage(done.prompt_tokens + done.completion_tokens)


class _StreamMeter:
    """Charges a stream's tokens once: the usage of its final event or, for a stream cut short
    (the client left, the upstream broke), the tokens generated until then, so that leaving
    just before the end does not dodge a token limit."""

    __slots__ = ("generated", "on_usage")

    def __init__(self, on_usage: OnUsage) -> None:
        self.on_usage: OnUsage | None = on_usage
        self.generated = 0

    def delta(self, event: TextDelta) -> None:
        # an upstream's deltas carry no token ids: one token each, or one per log-prob
        self.generated += len(event.token_ids) or max(len(event.logprobs), 1)

    def finished(self, done: Finished) -> None:
        _charge(self.on_usage, done)
        self.on_usage = None

    def close(self) -> None:
        if self.on_usage is not None and self.generated:
            self.on_usage(self.generated)
        self.on_usage = None


# -- chat -----------------------------------------------------------------------------------


async def chat_completions(
    body: ChatCompletionRequest,
    request: Request,
    router: Router,
    call: GatewayRequest,
    on_finish: OnFinish | None = None,
    *,
    on_usage: OnUsage | None = None,
) -> Response:
    if body.stream:
        routed = await route_watching(router, call, request)
        ids = encode.ResponseIds(_response_model(body, routed), call.answer_id)
        return StreamingResponse(
            _chat_events(routed, ids, body, on_finish, on_usage),
            media_type="text/event-stream",
            headers=SSE_HEADERS | {ROUTE_HEADER: routed.info.header()},
        )
    routed, got, done = await whole_answer(router, call, request)
    _charge(on_usage, done)
    if body.logprobs:
        got.logprobs = _top(got.logprobs, body.top_logprobs or 0)
    ids = encode.ResponseIds(_response_model(body, routed), call.answer_id)
    if on_finish is not None:
        on_finish(got.text)
    route = routed.info.as_dict()
    answer = encode.chat_completion(ids, got, done, with_logprobs=body.logprobs, route=route)
    return JsonAnswer(answer, routed.info.header())


def _chat_events(
    routed: StartedAnswer,
    ids: encode.ResponseIds,
    body: ChatCompletionRequest,
    on_finish: OnFinish | None,
    on_usage: OnUsage | None,
) -> AsyncIterator[bytes]:
    usage = body.include_usage
    k = body.top_logprobs or 0
    text: list[str] = []
    # with tools, the format's own tokens come as deltas without text: no chunk for them
    quiet = bool(body.tools) and not body.logprobs

    def delta(event: TextDelta) -> bytes | None:
        text.append(event.text)
        if quiet and not event.text:
            return None
        lps = encode.chat_logprobs(_top(event.logprobs, k)) if body.logprobs else None
        return encode.chat_chunk(ids, content=event.text, logprobs=lps, include_usage=usage)

    def final(event: Finished, route: dict[str, Any]) -> bytes:
        if on_finish is not None:
            on_finish("".join(text))
        return encode.chat_chunk(
            ids,
            finish=encode.finish_reason(event),
            timings=event.timings.as_dict(),
            include_usage=usage,
            route=route,
        )

    return _events(
        routed,
        ids,
        on_usage,
        chat=True,
        include_usage=usage,
        lead=encode.chat_chunk(ids, role="assistant", content="", include_usage=usage),
        delta=delta,
        final=final,
        tool_call=lambda event: encode.chat_chunk(ids, tool_call=event, include_usage=usage),
    )


async def _events(
    routed: StartedAnswer,
    ids: encode.ResponseIds,
    on_usage: OnUsage | None,
    *,
    chat: bool,
    include_usage: bool,
    lead: bytes | None,
    delta: Callable[[TextDelta], bytes | None],
    final: Callable[[Finished, dict[str, Any]], bytes],
    tool_call: Callable[[ToolCallDelta], bytes] | None = None,
) -> AsyncIterator[bytes]:
    """An answer's SSE stream, chat and completion alike: `lead`, a chunk per delta, the final
    chunk (and the usage chunk if asked for) or an error event, then `[DONE]`. However the
    client's stream ends, the upstream stream is cancelled and its tokens are charged once."""
    stream = routed.stream
    meter = _StreamMeter(on_usage) if on_usage is not None else None
    try:
        if lead is not None:
            yield lead
        async for event in stream:
            if isinstance(event, ToolCallDelta):
                if tool_call is not None:
                    yield tool_call(event)
            elif isinstance(event, TextDelta):
                if meter is not None:
                    meter.delta(event)
                chunk = delta(event)
                if chunk is not None:
                    yield chunk
            elif isinstance(event, Finished):
                if meter is not None:
                    meter.finished(event)
                route = routed.info.as_dict()
                yield final(event, route)
                if include_usage:
                    yield encode.usage_chunk(ids, event, chat=chat, route=route)
                break
            elif isinstance(event, Failed):
                yield _error_event(event.error)
                break
        yield encode.SSE_DONE
    finally:
        stream.cancel()
        if meter is not None:
            meter.close()


# -- completions ----------------------------------------------------------------------------


async def completions(
    body: CompletionRequest,
    request: Request,
    router: Router,
    call: GatewayRequest,
    *,
    on_usage: OnUsage | None = None,
) -> Response:
    with_logprobs = body.logprobs is not None
    if body.stream:
        routed = await route_watching(router, call, request)
        ids = encode.ResponseIds(_response_model(body, routed), call.answer_id)
        return StreamingResponse(
            _completion_events(routed, ids, body, on_usage),
            media_type="text/event-stream",
            headers=SSE_HEADERS | {ROUTE_HEADER: routed.info.header()},
        )
    routed, got, done = await whole_answer(router, call, request)
    _charge(on_usage, done)
    k = body.logprobs or 0
    if with_logprobs:
        got.logprobs = _top(got.logprobs, k)
    ids = encode.ResponseIds(_response_model(body, routed), call.answer_id)
    echo = routed.echo
    out = encode.completion(
        ids,
        got,
        done,
        echo=echo.text,
        echo_logprobs=_top(echo.logprobs, k),
        with_logprobs=with_logprobs,
        route=routed.info.as_dict(),
    )
    return JsonAnswer(out, routed.info.header())


def _completion_events(
    routed: StartedAnswer,
    ids: encode.ResponseIds,
    body: CompletionRequest,
    on_usage: OnUsage | None,
) -> AsyncIterator[bytes]:
    usage = body.include_usage
    with_logprobs = body.logprobs is not None
    k = body.logprobs or 0
    echo = routed.echo
    offset = len(echo.text)
    lead = None
    if echo.text:  # the prompt first, in one chunk, with its tokens' log-probs if asked
        lps = (
            encode.completion_logprobs((), 0, prompt=_top(echo.logprobs, k))
            if with_logprobs
            else None
        )
        lead = encode.completion_chunk(ids, echo.text, logprobs=lps, include_usage=usage)

    def delta(event: TextDelta) -> bytes:
        nonlocal offset
        lps = encode.completion_logprobs(_top(event.logprobs, k), offset) if with_logprobs else None
        offset += len(event.text)
        return encode.completion_chunk(ids, event.text, logprobs=lps, include_usage=usage)

    def final(event: Finished, route: dict[str, Any]) -> bytes:
        return encode.completion_chunk(
            ids,
            "",
            finish=encode.finish_reason(event),
            timings=event.timings.as_dict(),
            include_usage=usage,
            route=route,
        )

    return _events(
        routed, ids, on_usage, chat=False, include_usage=usage, lead=lead, delta=delta, final=final
    )
