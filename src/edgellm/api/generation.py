"""Chat and text completions: validate, queue on the engine, answer whole or as SSE."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

from fastapi import Request
from fastapi.responses import StreamingResponse

from edgellm.api import render
from edgellm.api.errors import error_body
from edgellm.api.schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    ChatDelta,
    Completion,
    CompletionRequest,
)
from edgellm.engine.engine import Engine, GenerationStream
from edgellm.engine.types import (
    Failed,
    Finished,
    GenerationRequest,
    SamplingParams,
    TextDelta,
)
from edgellm.errors import EdgeLLMError

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _sampling(body: ChatCompletionRequest | CompletionRequest, engine: Engine) -> SamplingParams:
    return SamplingParams(
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        min_p=body.min_p,
        seed=body.seed if body.seed is not None else engine.config.seed,
    )


async def _watch_disconnect(request: Request, on_disconnect: Callable[[], None]) -> None:
    """For whole (non-streamed) answers: cancel the work if the client goes away meanwhile."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            on_disconnect()
            return


async def _collect(stream: GenerationStream, request: Request) -> tuple[render.Collected, Finished]:
    got = render.Collected()
    watcher = asyncio.create_task(_watch_disconnect(request, stream.cancel))
    try:
        async for event in stream:
            if isinstance(event, TextDelta):
                got.add(event)
            elif isinstance(event, Finished):
                return got, event
            elif isinstance(event, Failed):
                raise _as_edgellm_error(event.error)
        raise RuntimeError("generation ended without a final event")  # pragma: no cover
    finally:
        watcher.cancel()
        stream.cancel()


def _as_edgellm_error(exc: Exception) -> EdgeLLMError:
    return exc if isinstance(exc, EdgeLLMError) else EdgeLLMError(f"generation failed: {exc}")


def _error_event(exc: Exception) -> bytes:
    err = _as_edgellm_error(exc)
    body = error_body(err.message, type_=err.error_type, param=err.param, code=err.code)
    return render.sse(json.dumps(body))


# -- chat -----------------------------------------------------------------------------------


async def chat_completions(
    body: ChatCompletionRequest, request: Request, engine: Engine
) -> ChatCompletion | StreamingResponse:
    prompt = engine.chat_prompt([m.model_dump() for m in body.messages])
    max_tokens = engine.resolve_max_tokens(len(prompt), body.token_cap())
    gen = GenerationRequest(
        prompt_tokens=prompt,
        max_tokens=max_tokens,
        sampling=_sampling(body, engine),
        stop=body.stop_sequences(),
        logprobs=body.logprobs,
        top_logprobs=(body.top_logprobs or 0) if body.logprobs else 0,
        ignore_eos=body.ignore_eos,
    )
    ids = render.ResponseIds.new(body.model, "chatcmpl")
    stream = engine.submit(gen)  # a full queue raises 429 here, before any response starts
    if body.stream:
        return StreamingResponse(
            _chat_events(stream, ids, body),
            media_type="text/event-stream",
            headers=SSE_HEADERS,
        )
    got, done = await _collect(stream, request)
    return render.chat_completion(ids, got, done, with_logprobs=body.logprobs)


async def _chat_events(
    stream: GenerationStream,
    ids: render.ResponseIds,
    body: ChatCompletionRequest,
) -> AsyncIterator[bytes]:
    usage = body.include_usage
    try:
        yield render.chat_chunk(ids, ChatDelta(role="assistant", content=""), include_usage=usage)
        async for event in stream:
            if isinstance(event, TextDelta):
                yield render.chat_chunk(
                    ids,
                    ChatDelta(content=event.text),
                    logprobs=render.chat_logprobs(event.logprobs) if body.logprobs else None,
                    include_usage=usage,
                )
            elif isinstance(event, Finished):
                yield render.chat_chunk(
                    ids,
                    ChatDelta(),
                    finish=render.finish_reason(event),
                    timings=event.timings.as_dict(),
                    include_usage=usage,
                )
                if usage:
                    yield render.usage_chunk(ids, event, chat=True)
                break
            elif isinstance(event, Failed):
                yield _error_event(event.error)
                break
        yield render.SSE_DONE
    finally:
        stream.cancel()


# -- completions ----------------------------------------------------------------------------


async def completions(
    body: CompletionRequest, request: Request, engine: Engine
) -> Completion | StreamingResponse:
    prompt = engine.text_prompt(body.prompt)
    max_tokens = engine.resolve_max_tokens(len(prompt), body.max_tokens)
    echo = ""
    if body.echo:
        echo = body.prompt if isinstance(body.prompt, str) else engine.detokenize(prompt)
    with_logprobs = body.logprobs is not None
    gen = GenerationRequest(
        prompt_tokens=prompt,
        max_tokens=max_tokens,
        sampling=_sampling(body, engine),
        stop=body.stop_sequences(),
        logprobs=with_logprobs,
        top_logprobs=body.logprobs or 0,
        ignore_eos=body.ignore_eos,
    )
    ids = render.ResponseIds.new(body.model, "cmpl")
    stream = engine.submit(gen)
    if body.stream:
        return StreamingResponse(
            _completion_events(stream, ids, body, echo),
            media_type="text/event-stream",
            headers=SSE_HEADERS,
        )
    got, done = await _collect(stream, request)
    return render.completion(ids, got, done, echo=echo, with_logprobs=with_logprobs)


async def _completion_events(
    stream: GenerationStream,
    ids: render.ResponseIds,
    body: CompletionRequest,
    echo: str,
) -> AsyncIterator[bytes]:
    usage = body.include_usage
    with_logprobs = body.logprobs is not None
    offset = len(echo)
    try:
        if echo:
            yield render.completion_chunk(ids, echo, include_usage=usage)
        async for event in stream:
            if isinstance(event, TextDelta):
                lps = render.completion_logprobs(event.logprobs, offset) if with_logprobs else None
                offset += len(event.text)
                yield render.completion_chunk(ids, event.text, logprobs=lps, include_usage=usage)
            elif isinstance(event, Finished):
                yield render.completion_chunk(
                    ids,
                    "",
                    finish=render.finish_reason(event),
                    timings=event.timings.as_dict(),
                    include_usage=usage,
                )
                if usage:
                    yield render.usage_chunk(ids, event, chat=False)
                break
            elif isinstance(event, Failed):
                yield _error_event(event.error)
                break
        yield render.SSE_DONE
    finally:
        stream.cancel()
