"""The lean upstream HTTP/1.1 client against a real asyncio server on 127.0.0.1."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from edgellm.gateway.upstream import (
    ConnectError,
    HttpClient,
    Origin,
    ReadError,
    ReadTimeout,
    Response,
)
from tests.unit.gateway.rawserver import (
    Handler,
    RawServer,
    Received,
    fixed,
    free_port,
    response,
    write_chunked,
)


def origin(server: RawServer, path: str = "/v1") -> Origin:
    return Origin.parse(server.url + path)


async def post(client: HttpClient, server: RawServer, body: bytes = b"{}", **kw: Any) -> Response:
    return await client.request(origin(server), b"POST", b"/v1/x", body, **kw)


def serve(handler: Handler, test: Any) -> Any:
    async def main() -> Any:
        async with RawServer(handler) as server:
            return await test(server)

    return asyncio.run(main())


def test_origin_parsing() -> None:
    o = Origin.parse("http://10.0.0.5:8080/v1/")
    assert (o.scheme, o.host, o.port, o.base_path, o.host_header) == (
        "http", "10.0.0.5", 8080, "/v1", b"10.0.0.5:8080"
    )  # fmt: skip
    s = Origin.parse("https://api.example.com/v1")
    assert (s.port, s.host_header) == (443, b"api.example.com")
    v6 = Origin.parse("http://[fd00::7]:8080")
    assert (v6.host, v6.host_header, v6.base_path) == ("fd00::7", b"[fd00::7]:8080", "")
    with pytest.raises(ValueError, match="not an http"):
        Origin.parse("ftp://x")


def test_content_length_body_request_line_and_headers() -> None:
    async def test(server: RawServer) -> None:
        client = HttpClient()
        r = await post(client, server, b'{"a": 1}', headers=b"X-Test: yes\r\n")
        assert r.status == 201 and r.header("content-type") == "application/json"
        assert await r.read() == b'{"ok": true}'
        r.close()
        got = server.requests[0]
        assert (got.method, got.path, got.body) == ("POST", "/v1/x", b'{"a": 1}')
        assert got.headers["host"] == f"127.0.0.1:{server.port}"
        assert got.headers["x-test"] == "yes"

    serve(fixed(201, b'{"ok": true}'), test)


def test_keep_alive_reuses_one_connection() -> None:
    async def test(server: RawServer) -> None:
        client = HttpClient()
        for n in range(5):
            r = await post(client, server, b'{"n": %d}' % n)
            assert await r.read() == b"hi"
            r.close()
        assert server.connections == 1 and len(server.requests) == 5
        assert client.connections_opened == 1 and client.idle_connections(origin(server)) == 1

    serve(fixed(200, b"hi", "text/plain"), test)


def test_concurrent_requests_get_their_own_connections() -> None:
    async def slow(_: Received, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.05)
        writer.write(response(200, b"ok"))

    async def test(server: RawServer) -> None:
        client = HttpClient()

        async def one() -> bytes:
            r = await post(client, server)
            try:
                return await r.read()
            finally:
                r.close()

        assert await asyncio.gather(*(one() for _ in range(4))) == [b"ok"] * 4
        assert server.connections == 4 and client.idle_connections(origin(server)) == 4
        await one()  # an idle one is reused
        assert server.connections == 4

    serve(slow, test)


def test_chunked_stream_arrives_chunk_by_chunk() -> None:
    step = asyncio.Event()

    async def stream(_: Received, writer: asyncio.StreamWriter) -> None:
        async def parts() -> AsyncIterator[bytes]:
            for n in range(3):
                yield b"data: %d\n\n" % n
                await step.wait()
                step.clear()

        await write_chunked(writer, parts())

    async def test(server: RawServer) -> None:
        client = HttpClient()
        r = await post(client, server)
        assert r.header("transfer-encoding") == "chunked"
        got = []
        for _ in range(3):
            got.append(await asyncio.wait_for(r.next_chunk(), 2))  # each before the next is sent
            step.set()
        assert got == [b"data: 0\n\n", b"data: 1\n\n", b"data: 2\n\n"]
        assert await r.next_chunk() is None and r.complete
        r.close()
        assert client.idle_connections(origin(server)) == 1  # chunked end: reusable
        r2 = await post(client, server)
        r2.close()  # body not read: the connection is aborted, not pooled
        assert server.connections == 1 and client.idle_connections(origin(server)) == 0

    serve(stream, test)


def test_body_until_close_and_connection_close_header() -> None:
    async def until_close(_: Received, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        await writer.drain()
        writer.close()

    async def test(server: RawServer) -> None:
        client = HttpClient()
        r = await post(client, server)
        assert await r.read() == b"all of it"
        r.close()
        assert client.idle_connections(origin(server)) == 0  # not kept: the server closed it
        r = await post(client, server)
        assert await r.read() == b"all of it"
        r.close()
        assert server.connections == 2

    serve(until_close, test)


def test_upstream_closing_an_idle_connection_is_retried_on_a_fresh_one() -> None:
    on_first: list[Received] = []

    async def once_per_connection(received: Received, writer: asyncio.StreamWriter) -> None:
        if received.connection == 1:
            on_first.append(received)
            if len(on_first) > 1:
                writer.close()  # the keep-alive timer fired as the request came: no answer
                return
        writer.write(response(200, b"ok"))
        await writer.drain()

    async def test(server: RawServer) -> None:
        client = HttpClient()
        r = await post(client, server)
        assert await r.read() == b"ok"
        r.close()
        r = await post(client, server)  # reused connection dies without a byte: retried
        assert await r.read() == b"ok"
        r.close()
        assert server.connections == 2 and len(server.requests) == 3
        assert [q.connection for q in server.requests] == [1, 1, 2]

    serve(once_per_connection, test)


def test_connection_closed_before_the_answer_is_a_read_error() -> None:
    async def hang_up(_: Received, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async def test(server: RawServer) -> None:
        with pytest.raises(ReadError):
            await post(HttpClient(), server)

    serve(hang_up, test)


def test_connection_dropped_mid_body_is_a_read_error() -> None:
    async def half(_: Received, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        await writer.drain()
        writer.close()

    async def test(server: RawServer) -> None:
        r = await post(HttpClient(), server)
        with pytest.raises(ReadError):
            await r.read()
        r.close()

    serve(half, test)


def test_connect_refused() -> None:
    async def main() -> None:
        o = Origin.parse(f"http://127.0.0.1:{free_port()}")
        await HttpClient().request(o, b"POST", b"/", b"", connect_timeout=1)

    with pytest.raises(ConnectError, match="cannot connect"):
        asyncio.run(main())


def test_read_timeouts_for_head_and_body() -> None:
    async def stall(received: Received, writer: asyncio.StreamWriter) -> None:
        if received.body == b"head":
            await asyncio.sleep(5)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()
        await asyncio.sleep(5)

    async def test(server: RawServer) -> None:
        client = HttpClient()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(ReadTimeout):
            await post(client, server, b"head", read_timeout=0.2)
        assert loop.time() - t0 < 1
        r = await post(client, server, b"body", read_timeout=0.2)
        assert await r.next_chunk(0.2) == b"abc"
        with pytest.raises(ReadTimeout):
            await r.next_chunk(0.2)
        r.close()
        assert client.idle_connections(origin(server)) == 0

    serve(stall, test)


def test_cancelling_a_request_closes_its_upstream_connection() -> None:
    arrived = asyncio.Event()

    async def no_answer(_: Received, writer: asyncio.StreamWriter) -> None:
        arrived.set()  # and back to reading: the server sees the client's close as EOF

    async def test(server: RawServer) -> None:
        client = HttpClient()
        task = asyncio.create_task(post(client, server))
        await asyncio.wait_for(arrived.wait(), 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(200):
            if server.closed_by_client:
                break
            await asyncio.sleep(0.01)
        assert server.closed_by_client == 1
        assert client.idle_connections(origin(server)) == 0

    serve(no_answer, test)


def test_closing_a_stream_early_aborts_the_connection_the_upstream_sees_it() -> None:
    gone = asyncio.Event()

    async def stream(_: Received, writer: asyncio.StreamWriter) -> None:
        async def parts() -> AsyncIterator[bytes]:
            try:
                for n in range(200):
                    yield b"data: %d\n\n" % n
                    await asyncio.sleep(0.01)
            finally:
                gone.set()

        try:
            await write_chunked(writer, parts())
        except ConnectionError:
            gone.set()
            raise

    async def test(server: RawServer) -> None:
        client = HttpClient()
        r = await post(client, server)
        assert await r.next_chunk(2)
        r.close()  # the client went away: cancel the upstream
        await asyncio.wait_for(gone.wait(), 3)
        assert client.idle_connections(origin(server)) == 0

    serve(stream, test)


def test_works_on_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def test(server: RawServer) -> None:
        client = HttpClient()
        for _ in range(2):
            r = await post(client, server)
            assert await r.read() == b"ok"
            r.close()
        assert server.connections == 1

    async def main() -> None:
        async with RawServer(fixed(200, b"ok")) as server:
            await test(server)

    uvloop.run(main())
