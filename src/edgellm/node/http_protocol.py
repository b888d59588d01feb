"""uvicorn's httptools protocol with two changes for the request path of a busy gateway.

- A whole response (one with a content-length) goes out in one `transport.write`: uvicorn writes
  the status line and headers as soon as `http.response.start` is sent, and the body separately,
  so every answer cost two system calls and two TCP segments (two wake-ups of the client). The
  head is held until the body's first write; streamed (chunked) responses still send their head
  at once.
- A client disconnect can be watched without a task: the ASGI scope carries
  `scope["extensions"][DISCONNECT_EXTENSION]`, a function that registers a callback run when the
  connection is lost before the response is complete (at once if it already is), and returns a
  function that unregisters it. Without the extension (another server, a test client) callers
  fall back to waiting on `receive()` for `http.disconnect`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, cast

from uvicorn._types import ASGI3Application, ASGISendEvent
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from edgellm.api.disconnect import DISCONNECT_EXTENSION

OnDisconnect = Callable[[], None]
WatchDisconnect = Callable[[OnDisconnect], Callable[[], None]]


class _Capture:
    """Stands in for the transport while uvicorn writes one message: keeps what it writes."""

    __slots__ = ("closed", "data")

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data.append(data)

    def close(self) -> None:
        self.closed = True


class _Cycle(RequestResponseCycle):
    """A request-response cycle that sends a whole response's head with its body and tells a
    watcher about a lost connection. (Instances are uvicorn's cycles with their class swapped,
    so these attributes are class-level defaults.)"""

    _head: bytes | None = None
    _on_disconnect: OnDisconnect | None = None

    def watch_disconnect(self, callback: OnDisconnect) -> Callable[[], None]:
        if self.disconnected:
            callback()
        else:
            self._on_disconnect = callback

        def unwatch() -> None:
            self._on_disconnect = None

        return unwatch

    def lost(self) -> None:
        callback = self._on_disconnect
        if callback is not None and self.disconnected:
            self._on_disconnect = None
            callback()

    async def send(self, message: ASGISendEvent) -> None:
        kind = message["type"]
        head = self._head
        if self.flow.write_paused:  # uvicorn's send() will wait: no stand-in transport then
            if head is not None:
                self._head = None
                self.transport.write(head)
            await super().send(message)
        elif (kind == "http.response.start" and not self.response_started) or (
            kind == "http.response.body" and head is not None
        ):
            await self._send_captured(message)
        else:
            await super().send(message)

    async def _send_captured(self, message: ASGISendEvent) -> None:
        # uvicorn's send() does not suspend when writing is not paused, so nothing else sees
        # the stand-in transport
        transport = self.transport
        capture = _Capture()
        self.transport = capture  # type: ignore[assignment]
        try:
            await super().send(message)
        finally:
            self.transport = transport
        data = capture.data
        if message["type"] == "http.response.start":
            if data and self.chunked_encoding is False and not capture.closed:
                self._head = data[0]  # sent with the body
                return
        elif self._head is not None:
            data.insert(0, self._head)
            self._head = None
        if data:
            transport.write(data[0] if len(data) == 1 else b"".join(data))
        if capture.closed:
            transport.close()


def _unwatched() -> None:
    pass


def _watcher(cycle: _Cycle) -> WatchDisconnect:
    """The extension's function for one request. It holds its cycle weakly: the cycle's scope
    holds the function, and a strong reference back would make every request's cycle, scope and
    headers a reference cycle, garbage that only the cyclic collector frees (13 objects a
    request, found with gc.DEBUG_SAVEALL)."""
    ref = weakref.ref(cycle)

    def watch(callback: OnDisconnect) -> Callable[[], None]:
        alive = ref()
        # gone: its request is over (the serving task holds the cycle until then)
        return _unwatched if alive is None else alive.watch_disconnect(callback)

    return watch


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with `_Cycle`'s request-response cycles (pass the class as
    `uvicorn.run(..., http=CoalescingHttpToolsProtocol)`)."""

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        cycle.__class__ = _Cycle
        scope: Any = cycle.scope
        extensions = scope.get("extensions")
        if extensions is None:
            extensions = scope["extensions"] = {}
        extensions[DISCONNECT_EXTENSION] = _watcher(cast(_Cycle, cycle))
        super()._start_asgi_task(cycle, app)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        cycle = self.cycle
        if isinstance(cycle, _Cycle):
            cycle.lost()
