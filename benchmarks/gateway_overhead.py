"""What the gateway adds, against an instant fake OpenAI backend, next to LiteLLM proxy.

Processes: the fake backend (`edgellm.gateway.fake`, raw ASGI on uvicorn) and the load generator
share CPU 1; the proxy under test (EdgeLLM gateway, and LiteLLM proxy if a Python with
`litellm[proxy]` is given) runs alone, pinned to CPU 0, one worker. The load generator is a
hand-written keep-alive HTTP/1.1 client on asyncio (no wrk here), so it costs little per request.

Measured for the bare fake backend, a byte relay, a minimal ASGI proxy, the EdgeLLM gateway and
LiteLLM, in the same run. The relay (asyncio + uvloop, pinned to CPU 0 like the proxies) copies
bytes between each client connection and one upstream connection and does nothing else: what it
adds is the floor any proxy process pays here (two more loopback hops, waking the other core
twice), before any HTTP or routing work. The minimal ASGI proxy is the gateway's server stack
with nothing of the gateway in it (uvicorn as the gateway runs it, the body parsed as JSON, one
request upstream through the gateway's own lean client): what it adds is the floor of a Python
ASGI gateway on this machine.
- latency at 1 connection (median, p99);
- latency at 50 concurrent clients at a moderate offered load (--rate req/s in total, Poisson
  arrivals per client), p50 and p99, in --latency-rounds short rounds that alternate between the
  direct backend, the relay, the minimal proxy and the gateway (a noisy minute of a shared VM
  then hits them alike); "added" is the median over rounds of (proxy - direct in the same round);
- maximum requests/s with 10 and with 50 connections (closed loop, --seconds each);
- CPU time of the server process per request during those runs (psutil): on a shared machine the
  requests/s depend on what else runs, the CPU cost per request much less (1000 / it = the
  requests/s one free core could serve).

The fake backend stands for an instant upstream, but here it shares CPU 1 with the load
generator: through a proxy, its answer can wait behind the load generator's own work, a delay
the direct measurement never has (its client is idle while it waits) and no deployment has. By
default it runs at a higher priority (nice -10, as root) so it answers at once; --fake-nice 0
measures it as an equal.

With --baseline-src DIR (the src/ of another build, e.g. `git worktree add /tmp/base <commit>`),
that build's gateway is measured as one more row in the same rounds: a before/after comparison
on one machine state, which runs minutes apart on this VM cannot give.

    .venv/bin/python benchmarks/gateway_overhead.py [--litellm-python /path/to/python] [--seconds 8]
        [--baseline-src /tmp/base/src]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

BODY = json.dumps(
    {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
).encode()


RELAY = """
import asyncio, sys, uvloop
UP, PORT = int(sys.argv[1]), int(sys.argv[2])

class Up(asyncio.Protocol):
    def __init__(self, down):
        self.down = down
    def data_received(self, data):
        self.down.write(data)
    def connection_lost(self, exc):
        self.down.close()

class Down(asyncio.Protocol):
    up = None
    def connection_made(self, transport):
        self.transport = transport
        self.early = []  # bytes that came before the upstream connection was up
        asyncio.get_running_loop().create_task(self.connect())
    async def connect(self):
        loop = asyncio.get_running_loop()
        self.up, _ = await loop.create_connection(lambda: Up(self.transport), "127.0.0.1", UP)
        self.up.write(b"".join(self.early))
    def data_received(self, data):
        if self.up is None:
            self.early.append(data)
        else:
            self.up.write(data)
    def connection_lost(self, exc):
        if self.up is not None:
            self.up.close()

async def main():
    server = await asyncio.get_running_loop().create_server(Down, "127.0.0.1", PORT)
    await server.serve_forever()

uvloop.run(main())
"""

# The least a Python ASGI gateway does: uvicorn with the gateway's own settings (httptools
# protocol with coalesced writes, uvloop, no access log), the request body read and parsed, one
# request upstream through the gateway's lean client, the answer passed back. No routing, no
# auth, no metrics, no rendering: the floor of this server stack, which the gateway adds to.
MINIMAL = """
import json, sys, uvicorn
from edgellm.gateway.upstream import HttpClient, Origin
from edgellm.node.http_protocol import CoalescingHttpToolsProtocol
UP, PORT = int(sys.argv[1]), int(sys.argv[2])
origin = Origin.parse(f"http://127.0.0.1:{UP}/v1")
client = HttpClient()
HEAD = {"type": "http.response.start", "status": 200,
        "headers": [(b"content-type", b"application/json")]}

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    chunks, more = [], True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body = json.dumps(json.loads(b"".join(chunks))).encode()
    path = origin.base_path.encode() + b"/chat/completions"
    upstream = await client.request(origin, b"POST", path, body,
                                    b"Content-Type: application/json\\r\\n")
    try:
        answer = await upstream.read()
    finally:
        upstream.close()
    await send(HEAD)
    await send({"type": "http.response.body", "body": answer})

uvicorn.run(app, host="127.0.0.1", port=PORT, log_level="warning", access_log=False,
            http=CoalescingHttpToolsProtocol, loop="uvloop")
"""


BASELINE = "baseline gateway"  # the --baseline-src build


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request_bytes(port: int, path: str = "/v1/chat/completions") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer sk-bench\r\nContent-Length: {len(BODY)}\r\n\r\n"
    )
    return head.encode() + BODY


class Conn:
    """One keep-alive connection; `call()` sends a request and reads the whole response."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.req = request_bytes(port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def call(self) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(self.req)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = None
        chunked = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if length is not None:
            await self.reader.readexactly(length)
        elif chunked:
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def latency_run(port: int, clients: int, rate: float, seconds: float) -> list[float]:
    """`clients` connections, Poisson arrivals totalling `rate` req/s; latencies in ms."""
    out: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal errors
        conn = Conn(port)
        per_client = rate / clients
        try:
            while time.perf_counter() < deadline:
                await asyncio.sleep(random.expovariate(per_client))
                t0 = time.perf_counter()
                if await conn.call() != 200:
                    errors += 1
                out.append((time.perf_counter() - t0) * 1e3)
        finally:
            conn.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    if errors:
        print(f"  warning: {errors} non-200 answers", file=sys.stderr)
    return out


async def throughput_run(port: int, clients: int, seconds: float) -> tuple[float, list[float]]:
    done = 0
    lat: list[float] = []
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal done
        conn = Conn(port)
        try:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                if await conn.call() == 200:
                    done += 1
                lat.append((time.perf_counter() - t0) * 1e3)
        finally:
            conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return done / (time.perf_counter() - t0), lat


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
            raise RuntimeError(f"process exited: {proc.args}\n{err}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} did not open")


def spawn(
    args: list[str], cpu: int, port: int, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    cmd = ["taskset", "-c", str(cpu), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    wait_port(port, proc)
    return proc


@dataclass
class Result:
    name: str
    p50_1: float
    p99_1: float
    p50_50: float
    p99_50: float
    rps_10: float
    rps_50: float
    cpu_ms: float  # CPU time of the server process(es) per request, during the max-rate runs


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (LiteLLM may fork a worker)."""
    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


async def measure(
    name: str, port: int, pid: int, args: argparse.Namespace, *, fifty: bool = True
) -> Result:
    """1-connection latency, maximum requests/s and CPU per request of one server (and its
    latency at 50 clients if `fifty`; otherwise `alternate_latency` fills that in)."""
    for _ in range(200):  # warm-up: connections, caches, JIT-free but lazy imports
        await Conn(port).call()
    one = await latency_run(port, 1, args.rate / 50, args.seconds)
    at_fifty = await latency_run(port, 50, args.rate, args.seconds) if fifty else []
    cpu0 = cpu_seconds(pid)
    rps10, lat10 = await throughput_run(port, 10, args.seconds)
    rps50, lat50 = await throughput_run(port, 50, args.seconds)
    cpu_ms = (cpu_seconds(pid) - cpu0) * 1e3 / max(1, len(lat10) + len(lat50))
    r = Result(name, statistics.median(one), pct(one, 0.99), pct(at_fifty, 0.5),
               pct(at_fifty, 0.99), rps10, rps50, cpu_ms)  # fmt: skip
    print(
        f"{name:>16}: 1 conn p50 {r.p50_1:.2f} ms p99 {r.p99_1:.2f} | max {r.rps_10:.0f} req/s "
        f"(10 conns), {r.rps_50:.0f} req/s (50 conns) | {r.cpu_ms:.2f} ms CPU/request"
        + (
            f" | 50 clients @{args.rate:g}/s p50 {r.p50_50:.2f} p99 {r.p99_50:.2f}" if fifty else ""
        ),
        flush=True,
    )
    return r


async def alternate_latency(
    servers: list[tuple[str, int]], args: argparse.Namespace
) -> dict[str, tuple[list[float], list[tuple[float, float]]]]:
    """50 clients at --rate req/s against each server in turn, --latency-rounds times, so that a
    noisy minute of a shared machine hits every server alike. Per server: all latencies, and
    per round (p50, p99)."""
    out: dict[str, tuple[list[float], list[tuple[float, float]]]] = {
        name: ([], []) for name, _ in servers
    }
    for r in range(args.latency_rounds):
        line = []
        for name, port in servers if r % 2 == 0 else list(reversed(servers)):
            lat = await latency_run(port, 50, args.rate, args.round_seconds)
            out[name][0].extend(lat)
            out[name][1].append((pct(lat, 0.5), pct(lat, 0.99)))
            line.append(f"{name} {pct(lat, 0.5):.2f}/{pct(lat, 0.99):.2f}")
        print(f"  latency round {r + 1}, p50/p99 ms: " + ", ".join(line), flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0, help="each 1-connection and max-rate run")
    ap.add_argument("--rate", type=float, default=200.0, help="offered req/s for the 50 clients")
    ap.add_argument("--latency-rounds", type=int, default=6, help="alternating 50-client rounds")
    ap.add_argument("--round-seconds", type=float, default=4.0, help="length of each such round")
    ap.add_argument(
        "--fake-nice",
        type=int,
        default=-10,
        help="scheduling priority of the fake backend (0: as the load generator)",
    )
    ap.add_argument("--litellm-python", help="a Python with litellm[proxy] (separate venv)")
    ap.add_argument(
        "--baseline-src",
        help="the src/ directory of another EdgeLLM build (e.g. a `git worktree` of an older "
        "commit), measured as a second gateway row in the same rounds",
    )
    args = ap.parse_args()
    if (os.cpu_count() or 1) < 2:
        print("needs two CPUs", file=sys.stderr)
        return 1
    os.sched_setaffinity(0, {1})
    py = sys.executable
    procs: list[subprocess.Popen[bytes]] = []
    results: list[Result] = []
    added: dict[str, tuple[float, float]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    try:
        fake_port = free_port()
        fake_code = (
            "import uvicorn; from edgellm.gateway.fake import FakeBackend; "
            f"uvicorn.run(FakeBackend(), host='127.0.0.1', port={fake_port}, log_level='warning',"
            " access_log=False)"
        )
        procs.append(spawn([py, "-c", fake_code], 1, fake_port))
        if args.fake_nice:
            try:
                os.setpriority(os.PRIO_PROCESS, procs[-1].pid, args.fake_nice)
            except PermissionError:
                print("warning: cannot raise the fake backend's priority", file=sys.stderr)
                args.fake_nice = 0
        print(
            f"fake backend nice {args.fake_nice}; 50 clients at {args.rate:g} req/s, "
            f"{args.latency_rounds} alternating rounds of {args.round_seconds:g} s",
            flush=True,
        )
        results.append(
            asyncio.run(measure("fake (direct)", fake_port, procs[-1].pid, args, fifty=False))
        )

        relay_port = free_port()
        procs.append(spawn([py, "-c", RELAY, str(fake_port), str(relay_port)], 0, relay_port))
        results.append(
            asyncio.run(measure("byte relay", relay_port, procs[-1].pid, args, fifty=False))
        )

        minimal_port = free_port()
        procs.append(spawn([py, "-c", MINIMAL, str(fake_port), str(minimal_port)], 0, minimal_port))
        results.append(
            asyncio.run(
                measure("minimal ASGI proxy", minimal_port, procs[-1].pid, args, fifty=False)
            )
        )

        gw_port = free_port()
        cfg = tmp / "gateway.yaml"
        cfg.write_text(
            "models: []\nremote_models:\n  - name: fake\n    tier: edge-small\n    backends:\n"
            f"      - url: http://127.0.0.1:{fake_port}/v1\n        health_path: null\n"
            "        max_concurrency: 100000\n"
        )
        edgellm = [py, "-m", "edgellm", "serve", "--config", str(cfg), "--log-level", "warning"]
        procs.append(spawn([*edgellm, "--port", str(gw_port)], 0, gw_port))
        results.append(
            asyncio.run(measure("EdgeLLM gateway", gw_port, procs[-1].pid, args, fifty=False))
        )
        ports = [fake_port, relay_port, minimal_port, gw_port]
        if args.baseline_src:
            base_port = free_port()
            env = os.environ | {"PYTHONPATH": str(Path(args.baseline_src).resolve())}
            procs.append(spawn([*edgellm, "--port", str(base_port)], 0, base_port, env))
            results.append(
                asyncio.run(measure(BASELINE, base_port, procs[-1].pid, args, fifty=False))
            )
            ports.append(base_port)

        servers = [(r.name, port) for r, port in zip(results, ports, strict=True)]
        rounds_by_server = asyncio.run(alternate_latency(servers, args))
        direct_rounds = rounds_by_server[results[0].name][1]
        for r in results:
            lat, per_round = rounds_by_server[r.name]
            r.p50_50, r.p99_50 = pct(lat, 0.5), pct(lat, 0.99)
            if r is not results[0]:
                # added = the proxy's p50 (p99) minus the direct one's in the same round
                added[r.name] = (
                    statistics.median(
                        a[0] - d[0] for a, d in zip(per_round, direct_rounds, strict=True)
                    ),
                    statistics.median(
                        a[1] - d[1] for a, d in zip(per_round, direct_rounds, strict=True)
                    ),
                )

        if args.litellm_python:
            ll_port = free_port()
            ll_cfg = tmp / "litellm.yaml"
            ll_cfg.write_text(
                "model_list:\n  - model_name: fake\n    litellm_params:\n      model: openai/fake\n"
                f"      api_base: http://127.0.0.1:{fake_port}/v1\n      api_key: sk-fake\n"
                "litellm_settings:\n  set_verbose: false\n"
            )
            litellm = Path(args.litellm_python).parent / "litellm"
            env = os.environ | {
                "LITELLM_LOG": "ERROR",
                "LITELLM_MASTER_KEY": "sk-bench",  # the load generator sends this key
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no internet here
            }
            procs.append(
                spawn(
                    [
                        str(litellm),
                        "--config",
                        str(ll_cfg),
                        "--port",
                        str(ll_port),
                        "--num_workers",
                        "1",
                    ],
                    0,
                    ll_port,
                    env,
                )
            )
            ll = asyncio.run(measure("LiteLLM proxy", ll_port, procs[-1].pid, args))
            results.append(ll)
            # one window (it cannot keep up with the rate anyway), against all direct rounds
            added[ll.name] = (ll.p50_50 - results[0].p50_50, ll.p99_50 - results[0].p99_50)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
    print("\n| | 1 conn p50 / p99 (ms) | 50 clients p50 / p99 (ms) | added p50 / p99 (ms) "
          "| max req/s, 10 conns | max req/s, 50 conns | server CPU ms/request |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        a = added.get(r.name)
        cell = f"{a[0]:+.2f} / {a[1]:+.2f}" if a else "-"
        print(f"| {r.name} | {r.p50_1:.2f} / {r.p99_1:.2f} | {r.p50_50:.2f} / {r.p99_50:.2f} | "
              f"{cell} | {r.rps_10:.0f} | {r.rps_50:.0f} | {r.cpu_ms:.2f} |")  # fmt: skip
    gw = added["EdgeLLM gateway"]
    print(
        f"\nEdgeLLM gateway added latency at 50 clients (median over rounds): p50 {gw[0]:+.2f} ms "
        f"(target <= 1: {'ok' if gw[0] <= 1 else 'NOT MET'}), p99 {gw[1]:+.2f} ms "
        f"(target <= 5: {'ok' if gw[1] <= 5 else 'NOT MET'})"
    )
    if BASELINE in added:
        base = added[BASELINE]
        print(
            f"baseline gateway (--baseline-src) added: p50 {base[0]:+.2f} ms, p99 {base[1]:+.2f} ms"
        )
    by_name = {r.name: r for r in results}
    if "LiteLLM proxy" in by_name:
        ratio = by_name["EdgeLLM gateway"].rps_10 / by_name["LiteLLM proxy"].rps_10
        print(
            f"EdgeLLM / LiteLLM max req/s (10 conns): {ratio:.1f}x "
            f"(target >= 5: {'ok' if ratio >= 5 else 'NOT MET'})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
