"""The delaying TCP proxy, on 127.0.0.1 only, against a local echo server."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from edgellm.testbed.proxy import RETRANSMIT_MS, DelayProxy, LinkImpairment


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def _round_trip_ms(port: int, payload: bytes = b"ping") -> float:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        start = time.perf_counter()
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            got += s.recv(65536)
        assert got == payload
        return (time.perf_counter() - start) * 1000


def test_adds_the_delay_in_both_directions(echo_port: int) -> None:
    proxy = DelayProxy("127.0.0.1", echo_port, LinkImpairment(delay_ms=30)).start()
    try:
        direct = min(_round_trip_ms(echo_port) for _ in range(3))
        shaped = sorted(_round_trip_ms(proxy.port) for _ in range(5))
    finally:
        proxy.stop()
    # every shaped round trip waits 30 ms each way, whatever the load; the direct one may be
    # slowed by load too, so the floor is on the shaped time itself
    assert shaped[0] >= 60
    assert shaped[2] - direct < 60 + 150  # upper margin: a loaded shared machine


def test_jitter_never_reorders_bytes(echo_port: int) -> None:
    proxy = DelayProxy(
        "127.0.0.1", echo_port, LinkImpairment(delay_ms=5, jitter_ms=5), seed=1
    ).start()
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
            sent = b""
            for i in range(40):
                chunk = f"<{i}>".encode()
                s.sendall(chunk)
                sent += chunk
                time.sleep(0.002)
            got = b""
            while len(got) < len(sent):
                got += s.recv(65536)
    finally:
        proxy.stop()
    assert got == sent


def test_loss_shows_as_retransmission_stalls(echo_port: int) -> None:
    # A round trip stalls if either direction loses a segment: about 1 - 0.7^2 = 51 % here, so
    # all-or-none of 16 samples stalling has a probability below 1e-4.
    proxy = DelayProxy("127.0.0.1", echo_port, LinkImpairment(loss_pct=30), seed=7).start()
    try:
        samples = [_round_trip_ms(proxy.port) for _ in range(16)]
    finally:
        proxy.stop()
    stalled = [s for s in samples if s >= RETRANSMIT_MS]
    assert 0 < len(stalled) < len(samples)


def test_unreachable_target_closes_the_client_connection() -> None:
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        dead = int(probe.getsockname()[1])
    proxy = DelayProxy("127.0.0.1", dead, LinkImpairment(delay_ms=1)).start()
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
            s.sendall(b"hello")
            assert s.recv(10) == b""  # EOF, not a hang
    finally:
        proxy.stop()
