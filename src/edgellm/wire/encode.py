"""Engine events to OpenAI wire objects (chat and legacy completions), streamed or whole, and
OpenAI-style error bodies.

Answers are built as plain dicts and encoded by orjson: on the gateway's hot path, building
pydantic models only to serialise them cost more than the rest of the rendering, and the standard
library's encoder is slower than both. The shapes are exactly those of the response models in
`wire/schemas.py` (which document them in the OpenAPI schema); a unit test holds the two together.
A float JSON cannot carry (NaN, infinite) is written as `null`, as pydantic does.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from edgellm import __version__
from edgellm.engine.types import Finished, FinishReason, TextDelta, TokenLogprob, ToolCallDelta
from edgellm.wire.echo import unscored
from edgellm.wire.schemas import ErrorDetail, ErrorResponse

SYSTEM_FINGERPRINT = f"edgellm-{__version__}"


def _plain(value: object) -> object:
    """What orjson does not encode itself (it is asked only then): numpy scalars, say a score a
    policy put in the `route` object, as the Python numbers they hold."""
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def to_json(payload: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON; non-finite floats as null."""
    return orjson.dumps(payload, default=_plain)


def sse(payload: str | bytes) -> bytes:
    data = payload if isinstance(payload, bytes) else payload.encode()
    return b"data: " + data + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


def usage_of(done: Finished) -> dict[str, Any]:
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": done.timings.cache_n},
    }


def finish_reason(done: Finished) -> str:
    # A cancelled request has no client to read this; "stop" keeps the field valid.
    if done.reason is FinishReason.LENGTH or done.reason is FinishReason.TOOL_CALLS:
        return done.reason.value
    return "stop"


def chat_logprobs(items: tuple[TokenLogprob, ...] | list[TokenLogprob]) -> dict[str, Any]:
    return {
        "content": [
            {
                "token": lp.token,
                "logprob": lp.logprob,
                "bytes": list(lp.bytes),
                "top_logprobs": [
                    {"token": t.token, "logprob": t.logprob, "bytes": list(t.bytes)} for t in lp.top
                ],
            }
            for lp in items
        ]
    }


def completion_logprobs(
    items: Sequence[TokenLogprob], text_offset: int, *, prompt: Sequence[TokenLogprob] = ()
) -> dict[str, Any]:
    """The legacy `logprobs` object: the echoed `prompt`'s tokens first (offsets from 0, the
    first one's log-prob and alternatives null), then `items` from `text_offset` on."""
    offsets = []
    pos = 0
    for lp in prompt:
        offsets.append(pos)
        pos += len(lp.token)
    pos = text_offset
    for lp in items:
        offsets.append(pos)
        pos += len(lp.token)
    every = [*prompt, *items] if prompt else items
    return {
        "tokens": [lp.token for lp in every],
        "token_logprobs": [None if unscored(lp) else lp.logprob for lp in every],
        "top_logprobs": [
            None if unscored(lp) else {t.token: t.logprob for t in lp.top} for lp in every
        ],
        "text_offset": offsets,
    }


@dataclass(slots=True)
class Collected:
    """A whole generation gathered from its events (non-streaming responses)."""

    text: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)  # OpenAI tool calls, assembled
    complete: list[bool] = field(default_factory=list)  # per call: its arguments are whole

    def add(self, delta: TextDelta) -> None:
        self.text += delta.text
        self.logprobs.extend(delta.logprobs)

    def add_call(self, delta: ToolCallDelta) -> None:
        while len(self.calls) <= delta.index:
            self.calls.append(
                {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
            )
            self.complete.append(False)
        call = self.calls[delta.index]
        if delta.id:
            call["id"] = delta.id
        if delta.name:
            call["function"]["name"] = delta.name
        call["function"]["arguments"] += delta.arguments
        self.complete[delta.index] = self.complete[delta.index] or delta.done

    def tool_calls(self, done: Finished) -> list[dict[str, Any]]:
        """The answer's calls: all of them when it ended by calling tools; when it was cut
        (max_tokens), only those whose arguments were complete, never a half-written one."""
        every = done.reason is FinishReason.TOOL_CALLS
        calls = [c for c, whole in zip(self.calls, self.complete, strict=True) if whole or every]
        for call in calls:
            call["id"] = call["id"] or tool_call_id()
        return calls


def tool_call_id() -> str:
    """`call_` and 24 hex digits, the shape of OpenAI's tool call ids."""
    return f"call_{_ids.getrandbits(96):024x}"


def tool_call_chunk(delta: ToolCallDelta) -> dict[str, Any]:
    """A streamed tool call piece, as `delta.tool_calls[i]`: the first piece of a call has its
    id, type and name, the others only an `arguments` fragment."""
    function: dict[str, Any] = {"arguments": delta.arguments}
    item: dict[str, Any] = {"index": delta.index}
    if delta.id is not None or delta.name is not None:
        item["id"] = delta.id or tool_call_id()
        item["type"] = "function"
        function["name"] = delta.name or ""
    item["function"] = function
    return item


@dataclass(slots=True)
class ResponseIds:
    model: str
    id: str
    created: int = field(default_factory=lambda: int(time.time()))

    @classmethod
    def new(cls, model: str, prefix: str) -> ResponseIds:
        return cls(model=model, id=new_id(prefix))


def new_id(prefix: str) -> str:
    """`prefix-` and 128 random bits as 32 hex digits, as uuid4().hex gave, without a
    getrandom() system call per answer (the ids are opaque labels, not secrets)."""
    return f"{prefix}-{_ids.getrandbits(128):032x}"


_ids = random.Random()  # seeded from the OS once, at import


def _head(ids: ResponseIds, kind: str) -> dict[str, Any]:
    return {
        "id": ids.id,
        "object": kind,
        "created": ids.created,
        "model": ids.model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }


def _whole(
    ids: ResponseIds,
    kind: str,
    choice: dict[str, Any],
    done: Finished,
    route: dict[str, Any] | None,
) -> bytes:
    """A whole (non-streamed) answer with its one choice."""
    payload = _head(ids, kind)
    payload["choices"] = [choice]
    payload["usage"] = usage_of(done)
    payload["timings"] = done.timings.as_dict()
    payload["route"] = route
    return to_json(payload)


# -- chat -----------------------------------------------------------------------------------


def chat_completion(
    ids: ResponseIds,
    got: Collected,
    done: Finished,
    *,
    with_logprobs: bool,
    route: dict[str, Any] | None = None,
) -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": got.text}
    calls = got.tool_calls(done) if got.calls else None
    if calls:
        message["content"] = got.text or None
        message["tool_calls"] = calls
    choice = {
        "index": 0,
        "message": message,
        "logprobs": chat_logprobs(got.logprobs) if with_logprobs else None,
        "finish_reason": finish_reason(done),
    }
    return _whole(ids, "chat.completion", choice, done, route)


def chat_chunk(
    ids: ResponseIds,
    *,
    role: str | None = None,
    content: str | None = None,
    logprobs: dict[str, Any] | None = None,
    finish: str | None = None,
    timings: dict[str, float | int] | None = None,
    include_usage: bool = False,
    route: dict[str, Any] | None = None,
    tool_call: ToolCallDelta | None = None,
) -> bytes:
    """One streamed chunk: `role` and `content` are its delta, or a piece of a tool call."""
    chunk = _head(ids, "chat.completion.chunk")
    delta: dict[str, Any] = {"role": role, "content": content}
    if tool_call is not None:
        delta["tool_calls"] = [tool_call_chunk(tool_call)]
    chunk["choices"] = [
        {
            "index": 0,
            "delta": delta,
            "logprobs": logprobs,
            "finish_reason": finish,
        }
    ]
    return sse(_chunk_json(chunk, include_usage, timings, route))


def usage_chunk(
    ids: ResponseIds,
    done: Finished,
    *,
    chat: bool,
    route: dict[str, Any] | None = None,
    with_timings: bool = True,
) -> bytes:
    """The extra last chunk of `stream_options.include_usage`: no choices, only usage (and
    `timings`, unless `with_timings` is false: a test fake playing a server without them)."""
    chunk = _head(ids, "chat.completion.chunk" if chat else "text_completion")
    chunk["choices"] = []
    chunk["usage"] = usage_of(done)
    if with_timings:
        chunk["timings"] = done.timings.as_dict()
    if route:
        chunk["route"] = route
    return sse(to_json(chunk))


def _chunk_json(
    chunk: dict[str, Any],
    include_usage: bool,
    timings: dict[str, float | int] | None,
    route: dict[str, Any] | None,
) -> bytes:
    """A streamed chunk without the fields it does not carry (usage unless asked for)."""
    if include_usage:
        chunk["usage"] = None
    if timings is not None:
        chunk["timings"] = timings
    if route is not None:
        chunk["route"] = route
    return to_json(chunk)


# -- completions ----------------------------------------------------------------------------


def completion(
    ids: ResponseIds,
    got: Collected,
    done: Finished,
    *,
    echo: str,
    with_logprobs: bool,
    route: dict[str, Any] | None = None,
    echo_logprobs: Sequence[TokenLogprob] = (),
) -> bytes:
    """A whole text completion: `echo` (the prompt, when asked for) and its tokens'
    `echo_logprobs` before the answer's (see `wire/echo.py`)."""
    choice = {
        "index": 0,
        "text": echo + got.text,
        "logprobs": completion_logprobs(got.logprobs, len(echo), prompt=echo_logprobs)
        if with_logprobs
        else None,
        "finish_reason": finish_reason(done),
    }
    return _whole(ids, "text_completion", choice, done, route)


def completion_chunk(
    ids: ResponseIds,
    text: str,
    *,
    logprobs: dict[str, Any] | None = None,
    finish: str | None = None,
    timings: dict[str, float | int] | None = None,
    include_usage: bool = False,
    route: dict[str, Any] | None = None,
) -> bytes:
    chunk = _head(ids, "text_completion")
    chunk["choices"] = [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}]
    return sse(_chunk_json(chunk, include_usage, timings, route))


# -- errors ---------------------------------------------------------------------------------

ERROR_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "server_error",
}


def error_type(status: int) -> str:
    return ERROR_TYPE_BY_STATUS.get(status, "server_error")


def error_body(
    message: str, *, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, object]:
    """OpenAI's error object: `{"error": {"message", "type", "param", "code"}}`."""
    return ErrorResponse(
        error=ErrorDetail(message=message, type=type_, param=param, code=code)
    ).model_dump()


def error_json(status: int, message: str, code: str | None = None) -> bytes:
    """The error body of an HTTP status, encoded (for answers sent as raw ASGI messages)."""
    return to_json(error_body(message, type_=error_type(status), code=code))
