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
from dataclasses import dataclass, field
from typing import Any

import orjson

from edgellm import __version__
from edgellm.engine.types import Finished, FinishReason, TextDelta, TokenLogprob
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
    return "length" if done.reason is FinishReason.LENGTH else "stop"


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
    items: tuple[TokenLogprob, ...] | list[TokenLogprob], text_offset: int
) -> dict[str, Any]:
    offsets = []
    pos = text_offset
    for lp in items:
        offsets.append(pos)
        pos += len(lp.token)
    return {
        "tokens": [lp.token for lp in items],
        "token_logprobs": [lp.logprob for lp in items],
        "top_logprobs": [{t.token: t.logprob for t in lp.top} for lp in items],
        "text_offset": offsets,
    }


@dataclass(slots=True)
class Collected:
    """A whole generation gathered from its events (non-streaming responses)."""

    text: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)

    def add(self, delta: TextDelta) -> None:
        self.text += delta.text
        self.logprobs.extend(delta.logprobs)


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
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": got.text},
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
) -> bytes:
    """One streamed chunk: `role` and `content` are its delta."""
    chunk = _head(ids, "chat.completion.chunk")
    chunk["choices"] = [
        {
            "index": 0,
            "delta": {"role": role, "content": content},
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
) -> bytes:
    choice = {
        "index": 0,
        "text": echo + got.text,
        "logprobs": completion_logprobs(got.logprobs, len(echo)) if with_logprobs else None,
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
