"""CPU % and RSS of the serving processes at a fixed interval, tagged with the request phase.

Local servers: psutil by PID (children included). Remote servers: their Prometheus `/metrics`
(EdgeLLM's `edgellm_process_cpu_percent` / `edgellm_process_resident_memory_bytes`, else the
standard `process_cpu_seconds_total` / `process_resident_memory_bytes`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from edgellm.bench.records import ResourceSample


@dataclass
class PhaseTracker:
    """Which requests are in flight and whether any is still before its first token."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    prefill: set[int] = field(default_factory=set)
    decode: set[int] = field(default_factory=set)

    def start(self, request_id: int) -> None:
        with self.lock:
            self.prefill.add(request_id)

    def first_token(self, request_id: int) -> None:
        with self.lock:
            if request_id in self.prefill:
                self.prefill.discard(request_id)
                self.decode.add(request_id)

    def end(self, request_id: int) -> None:
        with self.lock:
            self.prefill.discard(request_id)
            self.decode.discard(request_id)

    def snapshot(self) -> tuple[int, str]:
        with self.lock:
            active = len(self.prefill) + len(self.decode)
            phase = "prefill" if self.prefill else "decode" if self.decode else "idle"
            return active, phase


Probe = Callable[[], tuple[float, int] | None]
"""Returns (cpu_percent, rss_bytes) since the previous call, or None if unavailable."""


def pid_probe(pid: int) -> Probe:
    root = psutil.Process(pid)
    known: dict[int, psutil.Process] = {}

    def probe() -> tuple[float, int] | None:
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return None
        cpu, rss = 0.0, 0
        for proc in procs:
            tracked = known.setdefault(proc.pid, proc)
            try:
                cpu += tracked.cpu_percent(interval=None)
                rss += tracked.memory_info().rss
            except psutil.Error:
                continue
        return cpu, rss

    probe()  # psutil's first cpu_percent() is always 0: prime it
    return probe


def metrics_probe(url: str, client: httpx.Client | None = None) -> Probe:
    http = client or httpx.Client(timeout=5.0)
    last: list[tuple[float, float]] = []

    def probe() -> tuple[float, int] | None:
        try:
            text = http.get(url).text
        except httpx.HTTPError:
            return None
        values: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                values.setdefault(sample.name, sample.value)
        rss = values.get("edgellm_process_resident_memory_bytes") or values.get(
            "process_resident_memory_bytes"
        )
        cpu = values.get("edgellm_process_cpu_percent")
        if cpu is None and "process_cpu_seconds_total" in values:
            now, seconds = time.monotonic(), values["process_cpu_seconds_total"]
            cpu = 0.0
            if last:
                dt = now - last[0][0]
                cpu = 100.0 * (seconds - last[0][1]) / dt if dt > 0 else 0.0
            last[:] = [(now, seconds)]
        if cpu is None or rss is None:
            return None
        return float(cpu), int(rss)

    return probe


class ResourceSampler:
    """Samples every `interval_s` in a daemon thread until `stop()`."""

    def __init__(
        self,
        probe: Probe,
        source: str,
        phases: PhaseTracker,
        interval_s: float = 0.5,
        on_sample: Callable[[ResourceSample], None] | None = None,
    ) -> None:
        self.probe = probe
        self.source = source
        self.phases = phases
        self.interval_s = interval_s
        self.on_sample = on_sample
        self.samples: list[ResourceSample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="resource-sampler", daemon=True)

    def start(self) -> ResourceSampler:
        self._thread.start()
        return self

    def stop(self) -> list[ResourceSample]:
        self._stop.set()
        with contextlib.suppress(RuntimeError):
            self._thread.join(timeout=10)
        return self.samples

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            measured = self.probe()
            if measured is None:
                continue
            active, phase = self.phases.snapshot()
            sample = ResourceSample(
                t_s=time.time(),
                source=self.source,
                cpu_percent=measured[0],
                rss_bytes=measured[1],
                active_requests=active,
                phase=phase,
            )
            self.samples.append(sample)
            if self.on_sample:
                self.on_sample(sample)
