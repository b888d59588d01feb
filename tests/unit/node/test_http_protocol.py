"""EdgeLLM's uvicorn protocol: one write per whole answer, client disconnects seen without a
task, no reference cycle per request."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

import uvicorn
from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send
from uvicorn.server import ServerState

from edgellm.api.disconnect import DISCONNECT_EXTENSION, ClientGoneError, DisconnectGuard
from edgellm.node.http_protocol import CoalescingHttpToolsProtocol


class _Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _connect(app: Any) -> tuple[CoalescingHttpToolsProtocol, _Transport]:
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    config.load()
    protocol = CoalescingHttpToolsProtocol(config, ServerState(), app_state={})
    transport = _Transport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return protocol, transport


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    def sync() -> None:
        asyncio.run(test())

    sync.__name__ = test.__name__
    return sync


REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


async def _settle(protocol: CoalescingHttpToolsProtocol) -> None:
    if protocol.tasks:  # the request's task, started when its headers were parsed
        await asyncio.wait(set(protocol.tasks))


@run
async def test_whole_answer_goes_out_in_one_write() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await Response(b'{"ok":true}', media_type="application/json")(scope, receive, send)

    protocol, transport = _connect(app)
    for _ in range(2):  # keep-alive: the second answer too
        protocol.data_received(REQUEST)
        await _settle(protocol)
    assert len(transport.writes) == 2
    for data in transport.writes:
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"content-length: 11" in head
        assert body == b'{"ok":true}'
    assert not transport.closed


@run
async def test_head_request_and_connection_close_still_answered() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await Response(b"abc")(scope, receive, send)

    protocol, transport = _connect(app)
    protocol.data_received(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    await _settle(protocol)
    assert len(transport.writes) == 1
    assert transport.writes[0].endswith(b"content-length: 3\r\n\r\n")
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await _settle(protocol)
    assert transport.writes[1].endswith(b"\r\n\r\nabc")
    assert transport.closed


@run
async def test_streamed_answer_sends_its_head_at_once() -> None:
    release = asyncio.Event()

    async def chunks() -> Any:
        await release.wait()
        yield b"data: 1\n\n"

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await StreamingResponse(chunks(), media_type="text/event-stream")(scope, receive, send)

    protocol, transport = _connect(app)
    protocol.data_received(REQUEST)
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(transport.writes) == 1  # the head, before the first event exists
    assert b"transfer-encoding: chunked" in transport.writes[0]
    release.set()
    await _settle(protocol)
    assert b"data: 1" in b"".join(transport.writes[1:])


@run
async def test_lost_connection_cancels_the_request_without_a_task() -> None:
    outcome: list[str] = []
    started = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert DISCONNECT_EXTENSION in scope["extensions"]
        tasks = len(asyncio.all_tasks())
        guard = DisconnectGuard(Request(scope, receive))
        assert len(asyncio.all_tasks()) == tasks  # no watcher task
        started.set()
        try:
            await asyncio.sleep(30)  # an upstream that has not answered yet
        except asyncio.CancelledError:
            assert guard.gone
            outcome.append(type(guard.client_gone()).__name__)
            assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
        finally:
            guard.stop()

    protocol, transport = _connect(app)
    protocol.data_received(REQUEST)
    await asyncio.wait_for(started.wait(), 5)
    protocol.connection_lost(None)
    await asyncio.wait_for(_settle(protocol), 5)
    assert outcome == [ClientGoneError.__name__]
    assert transport.writes == []


@run
async def test_a_finished_answer_is_not_a_disconnect() -> None:
    called: list[bool] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        unwatch = scope["extensions"][DISCONNECT_EXTENSION](lambda: called.append(True))
        await Response(b"x")(scope, receive, send)
        unwatch()

    protocol, transport = _connect(app)
    protocol.data_received(REQUEST)
    await _settle(protocol)
    protocol.connection_lost(None)
    assert called == []
    assert len(transport.writes) == 1


@run
async def test_a_finished_request_is_freed_without_the_cyclic_collector() -> None:
    """The disconnect hook in the scope holds its cycle weakly: a cycle whose scope held a bound
    method of the cycle was a reference cycle per request, for the collector to find."""
    cycles: list[weakref.ref[Any]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        guard = DisconnectGuard(Request(scope, receive))
        guard.stop()
        await Response(b"ok")(scope, receive, send)

    protocol, _ = _connect(app)
    gc.collect()
    gc.disable()
    try:
        for _ in range(3):
            protocol.data_received(REQUEST)
            assert protocol.cycle is not None
            cycles.append(weakref.ref(protocol.cycle))
            await _settle(protocol)
        protocol.cycle = None  # what uvicorn drops once the next request starts
        assert all(ref() is None for ref in cycles[:-1])
        assert cycles[-1]() is None
    finally:
        gc.enable()
