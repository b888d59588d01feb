"""Engine events to OpenAI wire objects (chat and legacy completions), streamed or whole."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

from edgellm import __version__
from edgellm.api.schemas import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatDelta,
    ChatLogprobs,
    ChatTokenLogprob,
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    TopLogprobOut,
    Usage,
)
from edgellm.engine.types import Finished, FinishReason, TextDelta, TokenLogprob

SYSTEM_FINGERPRINT = f"edgellm-{__version__}"


def sse(payload: str) -> bytes:
    return f"data: {payload}\n\n".encode()


SSE_DONE = b"data: [DONE]\n\n"


def usage_of(done: Finished) -> Usage:
    return Usage(
        prompt_tokens=done.prompt_tokens,
        completion_tokens=done.completion_tokens,
        total_tokens=done.prompt_tokens + done.completion_tokens,
        prompt_tokens_details={"cached_tokens": done.timings.cache_n},
    )


def finish_reason(done: Finished) -> str:
    # A cancelled request has no client to read this; "stop" keeps the field valid.
    return "length" if done.reason is FinishReason.LENGTH else "stop"


def chat_logprobs(items: tuple[TokenLogprob, ...] | list[TokenLogprob]) -> ChatLogprobs:
    return ChatLogprobs(
        content=[
            ChatTokenLogprob(
                token=lp.token,
                logprob=lp.logprob,
                bytes=list(lp.bytes),
                top_logprobs=[
                    TopLogprobOut(token=t.token, logprob=t.logprob, bytes=list(t.bytes))
                    for t in lp.top
                ],
            )
            for lp in items
        ]
    )


def completion_logprobs(
    items: tuple[TokenLogprob, ...] | list[TokenLogprob], text_offset: int
) -> CompletionLogprobs:
    offsets = []
    pos = text_offset
    for lp in items:
        offsets.append(pos)
        pos += len(lp.token)
    return CompletionLogprobs(
        tokens=[lp.token for lp in items],
        token_logprobs=[lp.logprob for lp in items],
        top_logprobs=[{t.token: t.logprob for t in lp.top} for lp in items],
        text_offset=offsets,
    )


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
        # 128 random bits as 32 hex digits, as uuid4().hex gave, without a getrandom() system
        # call per answer (the ids are opaque labels, not secrets)
        return cls(model=model, id=f"{prefix}-{_ids.getrandbits(128):032x}")


_ids = random.Random()  # seeded from the OS once, at import


# -- chat -----------------------------------------------------------------------------------


def chat_completion(
    ids: ResponseIds, got: Collected, done: Finished, *, with_logprobs: bool
) -> ChatCompletion:
    return ChatCompletion(
        **_head(ids),
        choices=[
            ChatChoice(
                message=AssistantMessage(content=got.text),
                logprobs=chat_logprobs(got.logprobs) if with_logprobs else None,
                finish_reason=finish_reason(done),
            )
        ],
        usage=usage_of(done),
        timings=done.timings.as_dict(),
    )


def chat_chunk(
    ids: ResponseIds,
    delta: ChatDelta,
    *,
    logprobs: ChatLogprobs | None = None,
    finish: str | None = None,
    timings: dict[str, float | int] | None = None,
    include_usage: bool = False,
    route: dict[str, Any] | None = None,
) -> bytes:
    chunk = ChatCompletionChunk(
        **_head(ids),
        choices=[ChatChunkChoice(delta=delta, logprobs=logprobs, finish_reason=finish)],
        timings=timings,
        route=route,
    )
    return _chunk_sse(chunk, include_usage=include_usage)


def usage_chunk(
    ids: ResponseIds, done: Finished, *, chat: bool, route: dict[str, Any] | None = None
) -> bytes:
    """The extra last chunk of `stream_options.include_usage`: no choices, only usage."""
    kind = ChatCompletionChunk if chat else Completion
    model = kind(
        **_head(ids), choices=[], usage=usage_of(done), timings=done.timings.as_dict(), route=route
    )
    return sse(model.model_dump_json(exclude=None if route else {"route"}))


def _head(ids: ResponseIds) -> dict[str, Any]:
    return {
        "id": ids.id,
        "created": ids.created,
        "model": ids.model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }


def _chunk_sse(chunk: ChatCompletionChunk | Completion, *, include_usage: bool) -> bytes:
    """A streamed chunk without the fields it does not carry (usage unless asked for)."""
    exclude = set() if include_usage else {"usage"}
    if chunk.timings is None:
        exclude.add("timings")
    if chunk.route is None:
        exclude.add("route")
    return sse(chunk.model_dump_json(exclude=exclude))


# -- completions ----------------------------------------------------------------------------


def completion(
    ids: ResponseIds, got: Collected, done: Finished, *, echo: str, with_logprobs: bool
) -> Completion:
    return Completion(
        **_head(ids),
        choices=[
            CompletionChoice(
                text=echo + got.text,
                logprobs=completion_logprobs(got.logprobs, len(echo)) if with_logprobs else None,
                finish_reason=finish_reason(done),
            )
        ],
        usage=usage_of(done),
        timings=done.timings.as_dict(),
    )


def completion_chunk(
    ids: ResponseIds,
    text: str,
    *,
    logprobs: CompletionLogprobs | None = None,
    finish: str | None = None,
    timings: dict[str, float | int] | None = None,
    include_usage: bool = False,
    route: dict[str, Any] | None = None,
) -> bytes:
    chunk = Completion(
        **_head(ids),
        choices=[CompletionChoice(text=text, logprobs=logprobs, finish_reason=finish)],
        timings=timings,
        route=route,
    )
    return _chunk_sse(chunk, include_usage=include_usage)
