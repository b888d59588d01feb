import asyncio
import json
from typing import Any

import httpx
import pytest

from edgellm.api.schemas import ChatCompletionRequest, CompletionRequest
from edgellm.config import HttpBackendConfig
from edgellm.engine.types import Failed, Finished, FinishReason, TextDelta
from edgellm.gateway.backends.http import HttpBackend
from edgellm.gateway.call import Call
from edgellm.gateway.errors import UpstreamError
from edgellm.gateway.health import ReplicaState


def sse(*chunks: dict[str, Any]) -> bytes:
    return (
        b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    )


def backend(handler: Any, **cfg: Any) -> HttpBackend:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    config = HttpBackendConfig(url="http://up/v1", **cfg)
    return HttpBackend("http://up/v1", "up-model", config, client, ReplicaState())


def chat_call(**body: Any) -> Call:
    req = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}], **body)
    return Call.of(req, {})


async def run(b: HttpBackend, call: Call) -> list[Any]:
    stream, _ = await b.open(call)
    return [e async for e in stream]


def test_sse_to_events_with_logprobs_usage_and_timings(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setenv("UP_KEY", "sk-1")

    def handler(request: httpx.Request) -> httpx.Response:
        seen["body"] = json.loads(request.content)
        seen["auth"] = request.headers.get("authorization")
        lp = {"token": "Hi", "logprob": -0.5, "bytes": [72, 105],
              "top_logprobs": [{"token": "Hi", "logprob": -0.5, "bytes": [72, 105]}]}  # fmt: skip
        body = sse(
            {"choices": [{"delta": {"role": "assistant", "content": ""}}]},
            {"choices": [{"delta": {"content": "Hi"}, "logprobs": {"content": [lp]}}]},
            {"choices": [{"delta": {}, "finish_reason": "length"}], "timings": {"prompt_n": 3}},
            {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}},
        )
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    call = chat_call(max_tokens=1)
    call.force_top_logprobs = 4
    events = asyncio.run(run(backend(handler, api_key_env="UP_KEY"), call))
    assert seen["auth"] == "Bearer sk-1"
    assert seen["body"]["model"] == "up-model" and seen["body"]["stream"] is True
    assert seen["body"]["logprobs"] is True and seen["body"]["top_logprobs"] == 4
    assert isinstance(events[0], TextDelta) and events[0].text == "Hi"
    assert events[0].logprobs[0].logprob == -0.5 and events[0].logprobs[0].top[0].token == "Hi"
    done = events[-1]
    assert isinstance(done, Finished) and done.reason is FinishReason.LENGTH
    assert done.completion_tokens == 1 and done.timings.prompt_n == 3


@pytest.mark.parametrize(
    ("status", "retryable"), [(500, True), (503, True), (429, True), (400, False)]
)
def test_error_statuses(status: int, retryable: bool) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"error": {"message": "nope"}})

    with pytest.raises(UpstreamError) as err:
        asyncio.run(run(backend(handler), chat_call()))
    assert err.value.retryable is retryable and "nope" in err.value.message
    assert err.value.status_code == status


def test_connection_error_and_cut_stream() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(UpstreamError, match="ConnectError"):
        asyncio.run(run(backend(refuse), chat_call()))

    def cut(request: httpx.Request) -> httpx.Response:
        body = b'data: {"choices": [{"delta": {"content": "a"}}]}\n\n'
        return httpx.Response(200, content=body)

    events = asyncio.run(run(backend(cut), chat_call()))
    assert isinstance(events[-1], Failed) and "without finishing" in str(events[-1].error)


def test_completions_echo_is_not_doubled() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=sse(
            {"choices": [{"text": "Say hi"}]},
            {"choices": [{"text": " there", "finish_reason": "stop"}]},
        ))  # fmt: skip

    call = Call.of(CompletionRequest(model="m", prompt="Say hi", echo=True), {})
    stream, echo = asyncio.run(backend(handler).open(call))
    assert echo == "Say hi"

    async def texts() -> list[str]:
        return [e.text async for e in stream if isinstance(e, TextDelta)]

    assert asyncio.run(texts()) == [" there"]
