"""`edgellm chat` reads answers with the wire package's stream reader: text, usage and the
server's decode speed from a stream; the server's error message from an error status or an
error event."""

from __future__ import annotations

import httpx
import pytest

from edgellm.cli.chat import ChatError, ChatSession, TurnStats
from edgellm.engine.types import Finished, FinishReason, Timings
from edgellm.wire import encode


def _session(handler: httpx.MockTransport) -> ChatSession:
    client = httpx.Client(base_url="http://fake/v1", transport=handler)
    return ChatSession(client, "m", temperature=0.0, max_tokens=8, messages=[])


def _sse(*chunks: bytes) -> httpx.MockTransport:
    body = b"".join(chunks)
    headers = {"content-type": "text/event-stream"}
    return httpx.MockTransport(lambda _: httpx.Response(200, content=body, headers=headers))


IDS = encode.ResponseIds(model="m", id="chatcmpl-1", created=0)


def test_a_stream_gives_its_text_usage_and_server_speed() -> None:
    timings = Timings(prompt_n=3, predicted_n=2, predicted_ms=100.0)
    done = Finished(FinishReason.STOP, prompt_tokens=3, completion_tokens=2, timings=timings)
    transport = _sse(
        encode.chat_chunk(IDS, content="Hel"),
        encode.chat_chunk(IDS, content="lo"),
        encode.chat_chunk(IDS, finish="stop", timings=timings.as_dict()),
        encode.usage_chunk(IDS, done, chat=True),
        encode.SSE_DONE,
    )
    stats = TurnStats()
    assert "".join(_session(transport).stream_reply(stats)) == "Hello"
    assert stats.chunks == 2 and stats.completion_tokens == 2
    speed = timings.as_dict()["predicted_per_second"]
    assert speed > 0 and stats.server_decode_tps == pytest.approx(speed)


def test_an_error_status_shows_the_servers_message() -> None:
    error = {"error": {"message": "The model 'x' does not exist", "type": "invalid_request_error"}}
    transport = httpx.MockTransport(lambda _: httpx.Response(404, json=error))
    with pytest.raises(ChatError, match=r"^404: The model 'x' does not exist$"):
        list(_session(transport).stream_reply(TurnStats()))


def test_an_error_event_mid_stream_ends_the_reply_with_its_message() -> None:
    transport = _sse(
        encode.chat_chunk(IDS, content="Hel"),
        b'data: {"error": {"message": "model crashed", "type": "server_error"}}\n\n',
        encode.chat_chunk(IDS, content="never shown"),
    )
    got: list[str] = []
    with pytest.raises(ChatError, match=r"^model crashed$"):
        got.extend(_session(transport).stream_reply(TurnStats()))
    assert got == ["Hel"]
