"""Event-stream wrappers: replay a peeked/buffered prefix, and account for a replica's load."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

from edgellm.engine.types import Failed, Finished, GenerationEvent
from edgellm.gateway.backends.base import EventStream


class BufferedEvents:
    """A generation whose events are all in memory already (a whole upstream answer, read and
    parsed): the router hands them on without iterating asynchronously."""

    def __init__(self, events: list[GenerationEvent]) -> None:
        self.events = events

    def cancel(self) -> None:
        """Nothing to stop: the upstream has answered."""

    async def __aiter__(self) -> AsyncIterator[GenerationEvent]:
        for event in self.events:
            yield event


class ReplayStream:
    """`prefix` events first, then the rest of `events` (None: there is no rest); cancelling
    reaches the upstream. `on_event` sees every event handed out once (not again when a reader
    pushes it back), `on_end` the last (None: the stream ended without one)."""

    def __init__(
        self,
        prefix: list[GenerationEvent],
        events: AsyncIterator[GenerationEvent] | None,
        upstream: EventStream,
        on_end: Callable[[GenerationEvent | None], None] | None = None,
        on_event: Callable[[GenerationEvent], None] | None = None,
    ) -> None:
        self._prefix = prefix
        self._events = events
        self._upstream = upstream
        self._on_end = on_end
        self._on_event = on_event
        self._pushed_back = 0  # the leading prefix events on_event has already seen
        self._ended = False

    def _end(self, last: GenerationEvent | None) -> None:
        if not self._ended:
            self._ended = True
            if self._on_end is not None:
                self._on_end(last)

    def cancel(self) -> None:
        self._upstream.cancel()
        self._end(None)

    async def next(self) -> GenerationEvent | None:
        """The next event, without closing the stream when the caller stops early."""
        seen = False
        if self._prefix:
            event = self._prefix.pop(0)
            if self._pushed_back:
                self._pushed_back -= 1
                seen = True
        elif self._events is None:
            self._end(None)
            return None
        else:
            try:
                event = await self._events.__anext__()
            except StopAsyncIteration:
                self._end(None)
                return None
        if self._on_event is not None and not seen:
            self._on_event(event)
        if isinstance(event, Finished | Failed):
            self._end(event)
        return event

    def take_to_end(self) -> list[GenerationEvent] | None:
        """Every remaining event, if they are all buffered and the last one ends the stream
        (else None, and nothing is taken): a whole answer collected without awaiting."""
        prefix = self._prefix
        ends = bool(prefix) and isinstance(prefix[-1], Finished | Failed)
        if not ends and self._events is not None:
            return None
        self._prefix = []
        if self._on_event is not None:
            for event in prefix[self._pushed_back :]:
                self._on_event(event)
        self._pushed_back = 0
        self._end(prefix[-1] if ends else None)
        return prefix

    def push_back(self, events: list[GenerationEvent]) -> None:
        """Hand `events` (already read) out again, first."""
        self._prefix[:0] = events
        self._pushed_back += len(events)

    async def __aiter__(self) -> AsyncIterator[GenerationEvent]:
        try:
            while (event := await self.next()) is not None:
                yield event
                if isinstance(event, Finished | Failed):
                    return
        finally:
            if not self._ended:
                self.cancel()


def elapsed_since(t0: float) -> float:
    return time.perf_counter() - t0
