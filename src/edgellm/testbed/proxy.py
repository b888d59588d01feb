"""A delaying TCP proxy: the cloud link's delay, jitter and loss where the kernel has no netem.

Every chunk read in either direction is released `delay ± jitter` later, in order (like a FIFO
link, so jitter never reorders the byte stream). TCP hides a lost segment from the application
and shows it as a retransmission stall, so loss is emulated as that stall: with probability
`loss_pct` a chunk waits an extra `RETRANSMIT_MS` (Linux's minimum RTO). Rate limits are left to
`tc tbf` on the link itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

RETRANSMIT_MS = 200.0
CHUNK = 64 * 1024


@dataclass
class LinkImpairment:
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0


class DelayProxy:
    """Listens on `listen_host:listen_port` (0 = pick one) and forwards to `target`."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        impairment: LinkImpairment,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        connect_timeout_s: float = 10.0,
        seed: int | None = None,
    ) -> None:
        self.target = (target_host, target_port)
        self.impairment = impairment
        self.listen = (listen_host, listen_port)
        self.connect_timeout_s = connect_timeout_s
        self.port = 0
        self._rng = random.Random(seed)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="delay-proxy", daemon=True
        )
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        return f"{self.listen[0]}:{self.port}"

    def start(self) -> DelayProxy:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        future.result(timeout=10)
        return self

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, *self.listen)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _one_way_delay_s(self) -> float:
        imp = self.impairment
        delay = imp.delay_ms + self._rng.uniform(-imp.jitter_ms, imp.jitter_ms)
        if imp.loss_pct and self._rng.random() * 100 < imp.loss_pct:
            delay += RETRANSMIT_MS
        return max(0.0, delay) / 1000

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            try:
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection(*self.target), self.connect_timeout_s
                )
            except (OSError, TimeoutError) as exc:
                log.info("proxy: cannot reach %s:%s: %s", *self.target, exc)
                return
            try:
                await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
            finally:
                up_writer.close()
        finally:
            writer.close()
            self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy one direction, each chunk held until its release time (FIFO, never reordered)."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def release() -> None:
            while True:
                due, data = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        releaser = asyncio.create_task(release())
        last_due = 0.0
        try:
            while True:
                data = await reader.read(CHUNK)
                if releaser.done():  # the far side is gone: stop reading this one
                    break
                last_due = max(last_due, time.monotonic() + self._one_way_delay_s())
                queue.put_nowait((last_due, data))
                if not data:
                    break
            await releaser
        except (OSError, asyncio.IncompleteReadError):
            releaser.cancel()
        finally:
            if not releaser.done():
                releaser.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await releaser
