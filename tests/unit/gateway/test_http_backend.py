import asyncio
import json
import math
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from edgellm.config import HttpBackendConfig
from edgellm.engine.types import Failed, Finished, FinishReason, TextDelta
from edgellm.gateway.backends.http import HttpBackend
from edgellm.gateway.errors import UpstreamError
from edgellm.gateway.health import ReplicaState
from edgellm.gateway.request import GatewayRequest
from edgellm.gateway.upstream import HttpClient
from edgellm.wire.echo import Echo
from edgellm.wire.schemas import ChatCompletionRequest, CompletionRequest
from tests.unit.gateway.rawserver import (
    Handler,
    RawServer,
    Received,
    fixed,
    free_port,
    write_chunked,
)


def sse(*chunks: dict[str, Any]) -> bytes:
    return (
        b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    )


def backend(url: str, **cfg: Any) -> HttpBackend:
    config = HttpBackendConfig(url=f"{url}/v1", **cfg)
    return HttpBackend(
        f"{url}/v1", "up-model", config, httpx.AsyncClient(), ReplicaState(), HttpClient()
    )


def chat_call(**body: Any) -> GatewayRequest:
    """A streamed chat request (the upstream streams too), unless `stream=False` is given."""
    body.setdefault("stream", True)
    req = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}], **body)
    return GatewayRequest.of(req, {})


async def run(b: HttpBackend, call: GatewayRequest) -> list[Any]:
    stream, _ = await b.open(call)
    return [e async for e in stream]


async def with_server(handler: Handler, test: Any) -> Any:
    async with RawServer(handler) as server:
        return await test(server)


def test_sse_to_events_with_logprobs_usage_and_timings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UP_KEY", "sk-1")
    lp = {"token": "Hi", "logprob": -0.5, "bytes": [72, 105],
          "top_logprobs": [{"token": "Hi", "logprob": -0.5, "bytes": [72, 105]}]}  # fmt: skip
    body = sse(
        {"choices": [{"delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"delta": {"content": "Hi"}, "logprobs": {"content": [lp]}}]},
        {"choices": [{"delta": {}, "finish_reason": "length"}], "timings": {"prompt_n": 3}},
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}},
    )
    call = chat_call(max_tokens=1)
    call.force_top_logprobs = 4

    async def test(server: RawServer) -> tuple[list[Any], Received]:
        events = await run(backend(server.url, api_key_env="UP_KEY"), call)
        return events, server.requests[0]

    events, seen = asyncio.run(with_server(fixed(200, body, "text/event-stream"), test))
    sent = json.loads(seen.body)
    assert seen.path == "/v1/chat/completions" and seen.headers["authorization"] == "Bearer sk-1"
    assert sent["model"] == "up-model" and sent["stream"] is True
    assert sent["logprobs"] is True and sent["top_logprobs"] == 4
    assert isinstance(events[0], TextDelta) and events[0].text == "Hi"
    assert events[0].logprobs[0].logprob == -0.5 and events[0].logprobs[0].top[0].token == "Hi"
    done = events[-1]
    assert isinstance(done, Finished) and done.reason is FinishReason.LENGTH
    assert done.completion_tokens == 1 and done.timings.prompt_n == 3


@pytest.mark.parametrize(
    ("status", "retryable"), [(500, True), (503, True), (429, True), (400, False)]
)
def test_error_statuses(status: int, retryable: bool) -> None:
    body = json.dumps({"error": {"message": "nope"}}).encode()

    async def test(server: RawServer) -> None:
        await run(backend(server.url), chat_call())

    with pytest.raises(UpstreamError) as err:
        asyncio.run(with_server(fixed(status, body), test))
    assert err.value.retryable is retryable and "nope" in err.value.message
    assert err.value.status_code == status


def test_connection_refused_is_a_retryable_upstream_error() -> None:
    port = free_port()
    with pytest.raises(UpstreamError, match="ConnectError") as err:
        asyncio.run(run(backend(f"http://127.0.0.1:{port}"), chat_call()))
    assert err.value.retryable and err.value.status_code == 502
    # the client's message names no address; the operator's detail (log) does
    assert f"127.0.0.1:{port}" not in err.value.message
    assert f"127.0.0.1:{port}" in err.value.detail


def test_cut_stream_fails_without_finishing() -> None:
    async def cut(_: Received, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
            b'data: {"choices": [{"delta": {"content": "a"}}]}\n\n'
        )
        await writer.drain()
        writer.close()  # no length, no chunks: the body ends at EOF, unfinished

    async def test(server: RawServer) -> list[Any]:
        return await run(backend(server.url), chat_call())

    events = asyncio.run(with_server(cut, test))
    assert isinstance(events[0], TextDelta) and events[0].text == "a"
    assert isinstance(events[-1], Failed) and "without finishing" in str(events[-1].error)


def test_connection_dropped_mid_chunked_stream_is_a_stream_error() -> None:
    async def die(_: Received, writer: asyncio.StreamWriter) -> None:
        async def parts() -> AsyncIterator[bytes]:
            yield b'data: {"choices": [{"delta": {"content": "a"}}]}\n\n'
            writer.transport.abort()

        await write_chunked(writer, parts())

    async def test(server: RawServer) -> list[Any]:
        return await run(backend(server.url), chat_call())

    events = asyncio.run(with_server(die, test))
    assert isinstance(events[0], TextDelta)
    assert isinstance(events[-1], Failed) and "stream broke: ReadError" in str(events[-1].error)


def test_tokens_pass_through_as_they_arrive() -> None:
    release = asyncio.Event()

    async def slow(_: Received, writer: asyncio.StreamWriter) -> None:
        async def parts() -> AsyncIterator[bytes]:
            yield b'data: {"choices": [{"delta": {"content": "first"}}]}\n\n'
            await release.wait()
            yield b'data: {"choices": [{"delta": {"content": "!"}, "finish_reason": "stop"}]}\n\n'
            yield b"data: [DONE]\n\n"

        await write_chunked(writer, parts())

    async def test(server: RawServer) -> list[Any]:
        stream, _ = await backend(server.url).open(chat_call())
        events = stream.__aiter__()
        first = await asyncio.wait_for(events.__anext__(), 2)  # before the rest is even written
        release.set()
        return [first] + [e async for e in events]

    events = asyncio.run(with_server(slow, test))
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["first", "!"]
    assert isinstance(events[-1], Finished)


def test_gap_between_chunks_beyond_first_token_timeout_fails_with_504() -> None:
    async def stall(_: Received, writer: asyncio.StreamWriter) -> None:
        async def parts() -> AsyncIterator[bytes]:
            yield b'data: {"choices": [{"delta": {"content": "a"}}]}\n\n'
            await asyncio.sleep(5)

        await write_chunked(writer, parts())

    async def test(server: RawServer) -> list[Any]:
        return await run(backend(server.url, first_token_timeout_s=0.2), chat_call())

    events = asyncio.run(with_server(stall, test))
    failed = events[-1]
    assert isinstance(failed, Failed) and isinstance(failed.error, UpstreamError)
    assert failed.error.status_code == 504 and "timed out mid-stream" in failed.error.message


def test_completions_echo_is_not_doubled_and_keeps_the_prompts_logprobs() -> None:
    """The upstream's first chunk is the echoed prompt with its tokens' log-probs: the text is
    cut (the handler sends `echo` once) and the log-probs go to `echo`, not to the answer's."""
    prompt_lps = {
        "tokens": ["Say", " hi"],
        "token_logprobs": [None, -1.5],
        "top_logprobs": [None, {" hi": -1.5}],
        "text_offset": [0, 3],
    }
    answer_lps = {"tokens": [" there"], "token_logprobs": [-0.1],
                  "top_logprobs": [{" there": -0.1}], "text_offset": [6]}  # fmt: skip
    body = sse(
        {"choices": [{"text": "Say hi", "logprobs": prompt_lps}]},
        {"choices": [{"text": " there", "logprobs": answer_lps, "finish_reason": "stop"}]},
    )
    request = CompletionRequest(model="m", prompt="Say hi", echo=True, logprobs=1, stream=True)
    call = GatewayRequest.of(request, {})

    async def test(server: RawServer) -> tuple[Echo, list[TextDelta], str]:
        stream, echo = await backend(server.url).open(call)
        deltas = [e async for e in stream if isinstance(e, TextDelta)]
        return echo, deltas, server.requests[0].path

    echo, deltas, path = asyncio.run(with_server(fixed(200, body, "text/event-stream"), test))
    assert echo.text == "Say hi" and path == "/v1/completions"
    assert [lp.token for lp in echo.logprobs] == ["Say", " hi"]
    assert math.isnan(echo.logprobs[0].logprob) and echo.logprobs[1].logprob == -1.5
    assert [d.text for d in deltas] == [" there"]
    assert [lp.token for d in deltas for lp in d.logprobs] == [" there"]


@pytest.mark.parametrize(
    "fields",
    [{"seed": 2**70}, {"prompt": [5, -(2**73)]}, {"seed": 7, "prompt": [5, 6]}],
    ids=["seed", "token-id", "within-64-bits"],
)
def test_integers_beyond_64_bits_go_upstream_as_sent(fields: dict[str, Any]) -> None:
    """The schema takes any JSON integer; the upstream (a node masks seeds, refuses token ids)
    gets each one as the client sent it, not a failure to encode it."""
    body = {"model": "m", "prompt": "x", "stream": True} | fields
    call = GatewayRequest.of(CompletionRequest(**body), {})
    answer = sse({"choices": [{"text": "ok", "finish_reason": "stop"}]})

    async def test(server: RawServer) -> tuple[list[Any], Received]:
        return await run(backend(server.url), call), server.requests[0]

    events, seen = asyncio.run(with_server(fixed(200, answer, "text/event-stream"), test))
    sent = json.loads(seen.body)
    assert {k: sent[k] for k in fields} == fields
    assert isinstance(events[-1], Finished)


# -- non-streamed requests: a whole JSON answer upstream -------------------------------------


def whole(status: int, data: dict[str, Any]) -> Handler:
    return fixed(status, json.dumps(data).encode())


def test_non_streamed_request_asks_for_a_whole_answer_and_gives_the_same_events() -> None:
    """What the SSE stream of the same answer gives: the text and every log-prob, then
    Finished with the upstream's usage and timings."""
    lp = {"token": "Hi", "logprob": -0.5, "bytes": [72, 105],
          "top_logprobs": [{"token": "Hi", "logprob": -0.5, "bytes": [72, 105]}]}  # fmt: skip
    lp2 = {"token": "!", "logprob": -0.25, "bytes": [33], "top_logprobs": []}
    answer = {
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi!"},
                "logprobs": {"content": [lp, lp2]},
                "finish_reason": "length",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        "timings": {"prompt_n": 3, "predicted_n": 2, "predicted_ms": 4.5},
    }
    call = chat_call(stream=False, max_tokens=2, stream_options={"include_usage": True})

    async def test(server: RawServer) -> tuple[list[Any], Received]:
        return await run(backend(server.url), call), server.requests[0]

    events, seen = asyncio.run(with_server(whole(200, answer), test))
    sent = json.loads(seen.body)
    assert "stream" not in sent and "stream_options" not in sent  # a plain, whole request
    assert seen.headers["accept"] == "application/json" and sent["model"] == "up-model"
    delta, done = events
    assert isinstance(delta, TextDelta) and delta.text == "Hi!"
    assert [t.logprob for t in delta.logprobs] == [-0.5, -0.25]
    assert delta.logprobs[0].top[0].token == "Hi" and delta.logprobs[0].bytes == b"Hi"
    assert isinstance(done, Finished) and done.reason is FinishReason.LENGTH
    assert (done.prompt_tokens, done.completion_tokens) == (3, 2)
    assert done.timings.prompt_n == 3 and done.timings.predicted_ms == 4.5


def test_whole_completion_strips_the_echo_and_reads_completion_logprobs() -> None:
    answer = {
        "choices": [
            {
                "text": "Say hi there",
                "logprobs": {"tokens": ["Say", " hi", " there"],
                             "token_logprobs": [None, -1.5, -0.1],
                             "top_logprobs": [None, {" hi": -1.5}, {" there": -0.1}],
                             "text_offset": [0, 3, 6]},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 2, "completion_tokens": 1},
    }  # fmt: skip
    call = GatewayRequest.of(
        CompletionRequest(model="m", prompt="Say hi", echo=True, logprobs=1), {}
    )

    async def test(server: RawServer) -> tuple[Echo, list[Any]]:
        stream, echo = await backend(server.url).open(call)
        return echo, [e async for e in stream]

    echo, events = asyncio.run(with_server(whole(200, answer), test))
    assert echo.text == "Say hi"
    assert [(lp.token, lp.logprob) for lp in echo.logprobs[1:]] == [(" hi", -1.5)]
    assert math.isnan(echo.logprobs[0].logprob)
    delta, done = events
    assert isinstance(delta, TextDelta) and delta.text == " there"
    assert [lp.token for lp in delta.logprobs] == [" there"]
    assert delta.logprobs[0].top[0].logprob == -0.1
    assert isinstance(done, Finished) and done.reason is FinishReason.STOP


def test_whole_answer_errors_fail_before_any_event() -> None:
    """An error status, an error object, a connection cut mid-body: nothing was sent, so the
    router may fail over (the first event is Failed, or open() raises)."""

    async def cut(_: Received, writer: asyncio.StreamWriter) -> None:
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"choices"')
        await writer.drain()
        writer.transport.abort()

    async def test(server: RawServer) -> list[Any]:
        return await run(backend(server.url), chat_call(stream=False))

    with pytest.raises(UpstreamError, match="answer broke: ReadError") as err:
        asyncio.run(with_server(cut, test))
    assert err.value.retryable
    with pytest.raises(UpstreamError, match="answered 503"):
        asyncio.run(with_server(whole(503, {"error": {"message": "busy"}}), test))
    events = asyncio.run(with_server(whole(200, {"error": {"message": "oops"}}), test))
    assert len(events) == 1 and isinstance(events[0], Failed) and "oops" in str(events[0].error)
    events = asyncio.run(with_server(whole(200, {"choices": [{"message": {}}]}), test))
    assert isinstance(events[-1], Failed) and "finish_reason" in str(events[-1].error)


def test_first_event_timeout_of_a_whole_answer_is_the_whole_request_limit() -> None:
    b = backend("http://127.0.0.1:9", first_token_timeout_s=1.0, timeout_s=30.0)
    assert b.first_event_timeout(chat_call(stream=False)) == 30.0
    assert b.first_event_timeout(chat_call(stream=True)) == 1.0
    cascade = chat_call(stream=False)
    cascade.needs_stream = True  # a cascade reads tokens as they arrive
    assert b.first_event_timeout(cascade) == 1.0 and b.streams(cascade)
    always = backend("http://127.0.0.1:9", first_token_timeout_s=1.0, upstream_streaming="always")
    assert always.streams(chat_call(stream=False))
    assert always.first_event_timeout(chat_call(stream=False)) == 1.0


def test_upstream_streaming_always_streams_a_non_streamed_request() -> None:
    body = sse(
        {"choices": [{"delta": {"content": "a"}, "finish_reason": "stop"}]},
        {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}},
    )

    async def test(server: RawServer) -> tuple[list[Any], Received]:
        b = backend(server.url, upstream_streaming="always")
        return await run(b, chat_call(stream=False)), server.requests[0]

    events, seen = asyncio.run(with_server(fixed(200, body, "text/event-stream"), test))
    sent = json.loads(seen.body)
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert isinstance(events[-1], Finished) and events[-1].completion_tokens == 1
