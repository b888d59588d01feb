"""ReplayStream: a buffered prefix, then the upstream; the end reported once; a whole buffered
answer taken without awaiting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from edgellm.engine.types import Failed, Finished, FinishReason, GenerationEvent, TextDelta, Timings
from edgellm.gateway.streams import BufferedEvents, ReplayStream

DELTA = TextDelta(text="hi", token_ids=())
DONE = Finished(reason=FinishReason.STOP, prompt_tokens=1, completion_tokens=1, timings=Timings())


class _Upstream:
    def __init__(self, events: list[GenerationEvent]) -> None:
        self.events = events
        self.cancelled = 0

    def cancel(self) -> None:
        self.cancelled += 1

    async def __aiter__(self) -> AsyncIterator[GenerationEvent]:
        for event in self.events:
            await asyncio.sleep(0)
            yield event


def _replay(
    prefix: list[GenerationEvent], upstream: _Upstream | BufferedEvents, *, live: bool
) -> tuple[ReplayStream, list[GenerationEvent | None]]:
    ended: list[GenerationEvent | None] = []
    events = upstream.__aiter__() if live else None
    return ReplayStream(prefix, events, upstream, ended.append), ended


def test_a_whole_buffered_answer_is_taken_at_once_and_ends_once() -> None:
    stream, ended = _replay([DELTA, DONE], BufferedEvents([]), live=False)
    assert stream.take_to_end() == [DELTA, DONE]
    assert ended == [DONE]
    stream.cancel()  # the collector's cleanup: no second end
    assert ended == [DONE]


def test_a_live_stream_is_not_taken_before_its_end_is_buffered() -> None:
    async def run() -> None:
        upstream = _Upstream([DONE])
        stream, ended = _replay([DELTA], upstream, live=True)
        assert stream.take_to_end() is None
        got = [event async for event in stream]  # nothing was taken by the refusal
        assert got == [DELTA, DONE] and ended == [DONE]

    asyncio.run(run())


def test_a_failure_at_the_end_of_the_buffer_is_taken_too() -> None:
    failed = Failed(RuntimeError("boom"))
    stream, ended = _replay([DELTA, failed], _Upstream([]), live=True)
    assert stream.take_to_end() == [DELTA, failed]
    assert ended == [failed]


def test_a_buffer_without_an_end_and_no_upstream_ends_empty() -> None:
    stream, ended = _replay([DELTA], BufferedEvents([]), live=False)
    assert stream.take_to_end() == [DELTA]
    assert ended == [None]  # no final event: the collector reports the broken answer


def test_cancel_reaches_the_upstream_and_reports_the_end() -> None:
    upstream = _Upstream([DONE])
    stream, ended = _replay([DELTA], upstream, live=True)
    stream.cancel()
    assert upstream.cancelled == 1 and ended == [None]


@pytest.mark.parametrize("taken", [True, False])
def test_each_event_is_seen_once_even_when_a_reader_pushes_some_back(taken: bool) -> None:
    more = TextDelta(text=" there", token_ids=())

    async def run() -> list[GenerationEvent]:
        seen: list[GenerationEvent] = []
        upstream = _Upstream([more, DONE])
        events = upstream.__aiter__() if not taken else None
        prefix: list[GenerationEvent] = [DELTA, more, DONE] if taken else [DELTA]
        stream = ReplayStream(prefix, events, upstream, on_event=seen.append)
        first = await stream.next()  # a reader (the cascade) looks at the first event...
        assert first is DELTA and seen == [DELTA]
        stream.push_back([DELTA])  # ...and puts it back
        rest = stream.take_to_end() if taken else [event async for event in stream]
        assert rest == [DELTA, more, DONE]  # handed out again
        return seen

    assert asyncio.run(run()) == [DELTA, more, DONE]  # but seen once
