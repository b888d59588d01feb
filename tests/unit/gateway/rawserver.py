"""A tiny HTTP/1.1 test server on 127.0.0.1 (asyncio streams), whose answers a test scripts."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    connection: int  # the number of the TCP connection it came on (1, 2, ...)


Handler = Callable[[Received, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class RawServer:
    handler: Handler
    port: int = 0
    requests: list[Received] = field(default_factory=list)
    connections: int = 0
    closed_by_client: int = 0  # connections the client closed (EOF or reset)
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    self.closed_by_client += 1
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                received = Received(method, path, headers, body, number)
                self.requests.append(received)
                await self.handler(received, writer)
                if writer.is_closing():
                    return
        except ConnectionError:
            self.closed_by_client += 1
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)


def response(status: int, body: bytes, content_type: str = "application/json") -> bytes:
    return (
        f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def fixed(status: int, body: bytes, content_type: str = "application/json") -> Handler:
    async def handle(_: Received, writer: asyncio.StreamWriter) -> None:
        writer.write(response(status, body, content_type))
        await writer.drain()

    return handle


async def write_chunked(writer: asyncio.StreamWriter, parts: AsyncIterator[bytes]) -> None:
    """A chunked SSE response, one chunk per part, flushed as each part comes."""
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    await writer.drain()
    async for part in parts:
        writer.write(b"%x\r\n%s\r\n" % (len(part), part))
        await writer.drain()
    writer.write(b"0\r\n\r\n")
    await writer.drain()


def free_port() -> int:
    """A port nothing listens on (bound and released at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
