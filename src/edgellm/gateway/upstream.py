"""A lean HTTP/1.1 client for the gateway's hot path: requests to OpenAI-HTTP replicas.

asyncio protocols and the `httptools` (llhttp) response parser, a keep-alive connection pool per
origin, Content-Length, chunked and read-until-close bodies, body chunks handed on as they
arrive (SSE streams pass tokens through at once), connect and read timeouts. Closing a response
before its body is complete aborts the connection, which is how the gateway cancels an upstream
generation. httpx stays for everything off the hot path (health checks, forwarded requests).

Errors are `HttpClientError` subclasses: `ConnectError` (could not connect), `ConnectTimeout`,
`ReadTimeout` (no byte within the read timeout), `ReadError` (the connection closed or broke
before the response was complete) and `ProtocolError` (not HTTP/1.x).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit

import httptools

_PAUSE_ABOVE = 1 << 20  # buffered body bytes before the socket stops being read (backpressure)


class HttpClientError(Exception):
    """Anything that went wrong talking to the upstream."""


class ConnectError(HttpClientError):
    pass


class HttpTimeout(HttpClientError):
    pass


class ConnectTimeout(HttpTimeout):
    pass


class ReadTimeout(HttpTimeout):
    pass


class ReadError(HttpClientError):
    pass


class ProtocolError(HttpClientError):
    pass


@dataclass(frozen=True, slots=True)
class Origin:
    """Where requests go: scheme, host, port, and the URL's path prefix (e.g. `/v1`)."""

    scheme: str
    host: str
    port: int
    base_path: str
    host_header: bytes = field(compare=False)

    @classmethod
    def parse(cls, url: str) -> Origin:
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        default = 443 if parts.scheme == "https" else 80
        port = parts.port or default
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        header = shown if port == default else f"{shown}:{port}"
        return cls(parts.scheme, host, port, parts.path.rstrip("/"), header.encode("idna"))


class Response:
    """One response. Its body is read with `read()` or `chunks()`; `close()` gives the
    connection back to the pool if the body was read to its end, and aborts it otherwise."""

    __slots__ = (
        "_buffer",
        "_buffered",
        "_complete",
        "_conn",
        "_error",
        "_head",
        "_waiter",
        "headers",
        "keep_alive",
        "status",
    )

    def __init__(self, conn: _Connection) -> None:
        self._conn: _Connection | None = conn
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.keep_alive = False
        self._head = False
        self._complete = False
        self._error: HttpClientError | None = None
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None

    def header(self, name: str) -> str | None:
        key = name.lower().encode("latin-1")
        for k, v in self.headers:
            if k == key:
                return v.decode("latin-1")
        return None

    @property
    def complete(self) -> bool:
        return self._complete

    # -- fed by the connection ----------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_head(self, status: int, keep_alive: bool) -> None:
        self.status = status
        self.keep_alive = keep_alive
        self._head = True
        self._wake()

    def _on_body(self, data: bytes) -> None:
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered > _PAUSE_ABOVE and self._conn is not None:
            self._conn.pause()
        self._wake()

    def _on_complete(self) -> None:
        self._complete = True
        self._wake()

    def _on_error(self, error: HttpClientError) -> None:
        if self._error is None and not self._complete:
            self._error = error
        self._wake()

    # -- read by the caller -------------------------------------------------------------------

    async def _wait(self, read_timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        handle = None
        if read_timeout is not None:
            handle = loop.call_later(read_timeout, _expire, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if handle is not None:
                handle.cancel()

    async def wait_head(self, read_timeout: float | None) -> None:
        while not self._head:
            if self._error is not None:
                raise self._error
            try:
                await self._wait(read_timeout)
            except TimeoutError:
                raise ReadTimeout(f"no response within {read_timeout} s") from None

    async def next_chunk(self, read_timeout: float | None = None) -> bytes | None:
        """The body bytes that arrived since the last call (waiting up to `read_timeout` seconds
        for some), or None at the end of the body."""
        while True:
            if self._buffer:
                data = self._buffer[0] if len(self._buffer) == 1 else b"".join(self._buffer)
                self._buffer.clear()
                if self._buffered > _PAUSE_ABOVE and self._conn is not None:
                    self._conn.resume()
                self._buffered = 0
                return data
            if self._complete:
                return None
            if self._error is not None:
                raise self._error
            try:
                await self._wait(read_timeout)
            except TimeoutError:
                raise ReadTimeout(f"no data within {read_timeout} s") from None

    async def chunks(self, read_timeout: float | None = None) -> AsyncIterator[bytes]:
        while (data := await self.next_chunk(read_timeout)) is not None:
            yield data

    async def read(self, read_timeout: float | None = None) -> bytes:
        parts = [data async for data in self.chunks(read_timeout)]
        return b"".join(parts)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._complete and self.keep_alive and self._error is None:
            conn.release()
        else:
            conn.abort()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; at most one response in flight."""

    def __init__(self, pool: HttpClient, origin: Origin) -> None:
        self.pool = pool
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.closed = False
        self.received = False  # a byte of the current response has arrived
        self.idle_since = 0.0
        self._until_close = False
        self._paused = False

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:  # bytes on an idle connection: it is out of step, drop it
            self.abort()
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            response._on_error(ProtocolError("unexpected protocol upgrade"))
            self.abort()
        except httptools.HttpParserError as exc:
            response._on_error(ProtocolError(f"malformed HTTP response: {exc}"))
            self.abort()

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost decides what the EOF meant

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._discard(self)
        response = self.response
        if response is None or response._complete:
            return
        if self._until_close and response._head and exc is None:
            response._on_complete()  # a body without length or chunking ends at EOF
            return
        reason = f": {exc}" if exc is not None else ""
        response._on_error(ReadError(f"the connection closed before the response ended{reason}"))

    # -- httptools callbacks ------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes | None) -> None:
        if self.response is not None:
            self.response.headers.append((name.lower(), value or b""))

    def on_headers_complete(self) -> None:
        response = self.response
        if response is None:
            return
        parser = self.parser
        status = parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
            response.headers.clear()
            return
        names = {k for k, _ in response.headers}
        framed = b"content-length" in names or b"transfer-encoding" in names
        self._until_close = not framed and status not in (204, 304)
        response._on_head(status, parser.should_keep_alive() and not self._until_close)

    def on_body(self, body: bytes) -> None:
        if self.response is not None:
            self.response._on_body(body)

    def on_message_complete(self) -> None:
        response = self.response
        if response is not None and response._head:
            response._on_complete()

    # -- used by the pool and the response ----------------------------------------------------

    def send(self, data: bytes) -> Response:
        assert self.transport is not None
        response = Response(self)
        self.response = response
        self.received = False
        self._until_close = False
        self.transport.write(data)
        return response

    def pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def release(self) -> None:
        self.response = None
        self.resume()
        if self.closed:
            return
        self.idle_since = time.monotonic()
        self.pool._put(self)

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool._discard(self)
            if self.transport is not None:
                self.transport.abort()


class HttpClient:
    """Keep-alive connections per origin, most recently used first. Bind it to one event loop
    (the first request does)."""

    def __init__(self, *, max_idle_per_origin: int = 256, idle_timeout_s: float = 4.0) -> None:
        self.max_idle_per_origin = max_idle_per_origin
        # below uvicorn's 5 s keep-alive, so an idle connection is dropped here first
        self.idle_timeout_s = idle_timeout_s
        self._idle: dict[Origin, list[_Connection]] = {}
        self._ssl: ssl.SSLContext | None = None
        self.connections_opened = 0

    def _put(self, conn: _Connection) -> None:
        idle = self._idle.setdefault(conn.origin, [])
        if len(idle) >= self.max_idle_per_origin:
            conn.abort()
            return
        idle.append(conn)

    def _discard(self, conn: _Connection) -> None:
        idle = self._idle.get(conn.origin)
        if idle and conn in idle:
            idle.remove(conn)

    def _take(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self.idle_timeout_s:
                return conn
            conn.abort()
        return None

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    async def _connect(self, origin: Origin, connect_timeout: float | None) -> _Connection:
        loop = asyncio.get_running_loop()
        conn = _Connection(self, origin)
        tls = self._ssl_context() if origin.scheme == "https" else None
        try:
            async with asyncio.timeout(connect_timeout):
                await loop.create_connection(
                    lambda: conn,
                    origin.host,
                    origin.port,
                    ssl=tls,
                    server_hostname=origin.host if tls else None,
                )
        except TimeoutError:
            conn.abort()
            raise ConnectTimeout(f"connecting to {origin.host}:{origin.port} timed out") from None
        except OSError as exc:
            raise ConnectError(f"cannot connect to {origin.host}:{origin.port}: {exc}") from exc
        self.connections_opened += 1
        return conn

    async def request(
        self,
        origin: Origin,
        method: bytes,
        path: bytes,
        body: bytes = b"",
        headers: bytes = b"",
        *,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
    ) -> Response:
        """Send the request and wait for the response's head (status and headers). `path` is
        sent as it is (with the origin's base path already in it); `headers` are extra header
        lines, each ending in CRLF. The caller must `close()` the response."""
        head = b"%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n%s\r\n" % (
            method,
            path,
            origin.host_header,
            len(body),
            headers,
        )
        data = head + body
        conn = self._take(origin)
        if conn is not None:
            response = conn.send(data)
            try:
                await response.wait_head(read_timeout)
                return response
            except ReadError:
                if conn.received:
                    raise
                # the upstream closed this idle connection as we sent: retry on a fresh one
                response.close()
            except BaseException:
                response.close()
                raise
        conn = await self._connect(origin, connect_timeout)
        response = conn.send(data)
        try:
            await response.wait_head(read_timeout)
        except BaseException:
            response.close()
            raise
        return response

    def idle_connections(self, origin: Origin) -> int:
        return len(self._idle.get(origin, ()))

    def close(self) -> None:
        for idle in list(self._idle.values()):
            for conn in list(idle):
                conn.abort()
        self._idle.clear()
