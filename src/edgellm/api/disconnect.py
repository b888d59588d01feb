"""A client that disconnects cancels the work serving its request.

EdgeLLM's uvicorn protocol (`node/http_protocol.py`) puts a function under
`scope["extensions"][DISCONNECT_EXTENSION]`: it registers a callback run when the connection is
lost before the response is complete, and returns a function that unregisters it. Elsewhere
(another server, a test client) the guard waits on `receive()` for `http.disconnect`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from fastapi import Request

from edgellm.errors import EdgeLLMError

DISCONNECT_EXTENSION = "edgellm.disconnect"


class ClientGoneError(EdgeLLMError):
    status_code = 499
    error_type = "invalid_request_error"
    code = "client_closed_request"


class DisconnectGuard:
    """While it is on, a client that disconnects cancels the task serving its request, wherever
    that task waits: routing, retries, the upstream's first token, a whole answer being
    collected. Cancelling closes the upstream connection (or stops the in-process generation).
    Under EdgeLLM's uvicorn protocol the connection's loss calls it back (no task); elsewhere one
    watcher task per request waits for `http.disconnect`."""

    def __init__(self, request: Request) -> None:
        self.gone = False
        self._task = asyncio.current_task()
        self._watcher: asyncio.Task[None] | None = None
        self._unwatch: Callable[[], None] | None = None
        extensions = request.scope.get("extensions")
        watch = extensions.get(DISCONNECT_EXTENSION) if extensions else None
        if watch is not None:
            self._unwatch = watch(self._lost)
        else:
            self._watcher = asyncio.create_task(self._watch(request))

    def _lost(self) -> None:
        self.gone = True
        if self._task is not None:
            self._task.cancel()

    async def _watch(self, request: Request) -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        self._lost()

    def stop(self) -> None:
        """Stop watching, before the response is sent (uvicorn's receive() reports a finished
        response as a disconnect)."""
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None

    def client_gone(self) -> ClientGoneError:
        """The error for a request cancelled by its client's disconnect; the serving task is
        no longer being cancelled after this."""
        if self._task is not None:
            self._task.uncancel()
        return ClientGoneError("the client closed the connection")
