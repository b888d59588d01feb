"""Soak: the gateway and two nodes at saturation, with hostile clients and node restarts.

Processes (all on 127.0.0.1): two `edgellm node` replicas of the same bundled model (small
context, `--parallel 2`, one thread each) behind one `edgellm serve` gateway model. Load: closed
loops of clients, each bounded in requests and time, more than the four slots can take at once:

- plain      non-streamed chat completions (`ignore_eos`, an exact `max_tokens`);
- stream     streamed chat completions;
- disconnect streams whose client closes the connection after a few chunks;
- abandon    non-streamed requests whose client gives up after a random fraction of a second;
- bad        malformed JSON, unknown models, out-of-range values, oversized bodies, bad token ids
             (each has one expected status).

Timeline: the nodes are primed (`prime`), a warm-up, a quiet snapshot (A), segment 1 during
which the nodes are killed with SIGKILL in turn (each while it is serving), restarted and primed,
a quiet snapshot (B), segment 2, a quiet snapshot (C). A quiet snapshot stops the clients,
waits until every idle keep-alive connection has expired (uvicorn closes them after 5 s, the
gateway's client after 4 s) and then reads every process's RSS and open descriptors (psutil).
A process is compared with its first quiet snapshot: the gateway (and a node never restarted)
with A, a restarted node with B.

After the run, each node's `/metrics` must show no request running or queued, and the gateway's
`/v1/router` no outstanding request on any replica.

Accepted (for the loss count): a well-formed non-streamed request is accepted unless the gateway
refuses it with 429 (every replica's queue full) or 503 (no replica may be tried). Every accepted
one must be answered 200 with exactly `max_tokens` tokens; anything else (another status, a
timeout, a broken connection) is a loss. Refusals are counted apart; the client count here is
below what one node queues (`--max-queue`), so none is expected.

    nice -n 10 .venv/bin/python benchmarks/soak.py --seconds 1800 --warmup 120 --restarts 4

Figures and the reasons behind these choices: docs/benchmarks.md, "Soak".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from edgellm.wire import decode

MODEL = "smollm2-135m-instruct"
SERVED = "soak"  # the gateway's name for the two replicas
# A node restart (loading the model included) took up to 135 s on the shared 2-core machine.
TAKE_BACK_S = 400.0
KEEPALIVE_SETTLE_S = 7.0
PRIME_ROUNDS = 4  # > uvicorn's 5 s keep-alive and the gateway client's 4 s idle timeout
# Few conversations, so that each node's saved-state cache holds all of them after the warm-up.
PROMPTS = ["Count to ten.", "Name three colours.", "Write a haiku about rain.", "Describe the sea."]


@dataclass
class SoakConfig:
    seconds: float = 60.0  # measured load (segments 1 and 2), without warm-up and pauses
    warmup: float = 20.0
    restarts: int = 1
    plain: int = 2
    stream: int = 2
    disconnect: int = 1
    abandon: int = 1
    bad: int = 1
    max_tokens: tuple[int, int] = (16, 40)  # per prompt, evenly spread
    ctx: int = 512
    parallel: int = 2
    threads: int = 1
    max_queue: int = 32
    # One request's bound (the client's, and the gateway's whole-answer timeout); a longer
    # wait counts as a hang. The wait for a first token includes the queue of a node serving
    # alone while the other restarts, which on a shared 2-core machine takes tens of seconds.
    request_timeout: float = 180.0
    first_token_timeout: float = 120.0
    max_body_bytes: int = 256 * 1024
    seed: int = 0
    log_dir: Path | None = None


# -- processes ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(proc: subprocess.Popen[bytes], url: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{url}: the process exited with {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if http.get(f"{url}/health").status_code == 200:
                    return
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not become healthy in {timeout} s")


@dataclass
class Proc:
    name: str
    port: int
    args: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def spawn(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as log:
            self.popen = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        return self.popen

    def start(self) -> None:
        wait_healthy(self.spawn(), self.url)

    async def restart(self) -> None:
        """Start again and wait until healthy, without blocking the load's event loop (nor a
        worker thread that an interrupted run would have to wait for)."""
        popen = self.spawn()
        deadline = time.monotonic() + TAKE_BACK_S
        async with httpx.AsyncClient(timeout=2) as http:
            while time.monotonic() < deadline:
                if popen.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {popen.returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{self.url}/health")).status_code == 200:
                        return
                await asyncio.sleep(0.2)
        raise RuntimeError(f"{self.name} did not become healthy in {TAKE_BACK_S} s")

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as when a device loses power."""
        assert self.popen is not None
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=30)

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=20)


@dataclass
class Cluster:
    gateway: Proc
    nodes: list[Proc]

    @property
    def procs(self) -> list[Proc]:
        return [self.gateway, *self.nodes]


def gateway_config(cfg: SoakConfig, nodes: list[Proc]) -> dict[str, Any]:
    backend = {
        "urls": [f"{n.url}/v1" for n in nodes],
        "model": MODEL,
        "connect_timeout_s": 1.0,
        "first_token_timeout_s": cfg.first_token_timeout,
        "timeout_s": cfg.request_timeout,
    }
    return {
        "server": {"host": "127.0.0.1", "max_body_bytes": cfg.max_body_bytes},
        "models": [],
        "remote_models": [
            {
                "name": SERVED,
                "tier": "edge-small",
                "context_length": cfg.ctx,
                "backends": [backend],
            }
        ],
        "router": {
            "health_interval_s": 1.0,
            "failure_threshold": 2,
            "cooldown_s": 2.0,
            "retries": 2,
            "backoff_s": 0.05,
        },
    }


@contextlib.contextmanager
def cluster(cfg: SoakConfig, log_dir: Path) -> Iterator[Cluster]:
    """Two nodes and a gateway; all of them stopped on the way out, whatever happened."""
    python = [sys.executable, "-m", "edgellm"]
    nodes: list[Proc] = []
    for i in (1, 2):
        port = free_port()
        args = [
            *python, "node", "--model", MODEL, "--host", "127.0.0.1", "--port", str(port),
            "--ctx", str(cfg.ctx), "--parallel", str(cfg.parallel),
            "--threads", str(cfg.threads), "--max-queue", str(cfg.max_queue),
            "--log-level", "warning",
        ]  # fmt: skip
        nodes.append(Proc(f"node{i}", port, args, log_dir / f"node{i}.log"))
    config_path = log_dir / "gateway.yaml"
    config_path.write_text(yaml.safe_dump(gateway_config(cfg, nodes)))
    gw_port = free_port()
    gw_args = [
        *python, "serve", "--config", str(config_path), "--host", "127.0.0.1",
        "--port", str(gw_port), "--log-level", "warning",
    ]  # fmt: skip
    gateway = Proc("gateway", gw_port, gw_args, log_dir / "gateway.log")
    running = Cluster(gateway, nodes)
    try:
        for proc in [*nodes, gateway]:  # the gateway's first health checks find them up
            proc.start()
        yield running
    finally:
        for proc in running.procs:
            proc.stop()


# -- measurements -------------------------------------------------------------------------


@dataclass
class Snapshot:
    label: str
    pid: int
    rss: int
    fds: int


def snapshot(label: str, procs: list[Proc]) -> dict[str, Snapshot]:
    out = {}
    for proc in procs:
        p = psutil.Process(proc.pid)
        out[proc.name] = Snapshot(label, proc.pid, p.memory_info().rss, p.num_fds())
    return out


def node_gauges(url: str) -> dict[str, float]:
    """`edgellm_requests_running` and `edgellm_queue_depth` from a node's /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        for name in ("edgellm_requests_running", "edgellm_queue_depth"):
            if line.startswith(name + "{") or line.startswith(name + " "):
                out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def router_replicas(url: str) -> dict[str, Any]:
    state = httpx.get(f"{url}/v1/router", timeout=10).json()
    replicas: dict[str, Any] = state["models"][SERVED]["replicas"]
    return replicas


# -- load ---------------------------------------------------------------------------------


@dataclass
class Restart:
    node: str
    killed_at: float  # seconds since the start of the load
    outstanding_at_kill: int
    marked_down_s: float | None
    ready_s: float  # the restarted node answers /health 200
    taken_back_s: float  # the gateway sent the restarted node a request that succeeded


@dataclass
class Tally:
    outcomes: Counter[str] = field(default_factory=Counter)  # "kind:outcome"
    statuses: Counter[str] = field(default_factory=Counter)  # "kind:status"
    losses: list[str] = field(default_factory=list)
    unexplained_errors: list[str] = field(default_factory=list)
    tokens: int = 0
    replayed: int = 0  # non-streamed answers that needed another replica after a failure
    cut_streams: int = 0  # streams that were on a killed node: they must end with an error event


def chat_body(
    rng: random.Random, cfg: SoakConfig, *, stream: bool, cut: bool = False
) -> dict[str, Any]:
    """Greedy answers of one fixed length per prompt: a node's saved-state cache (an LRU
    bounded at 256 MiB, by design) then holds a fixed set of conversations once warm, where
    random prompts would fill it to its bound during the run and look like a leak of that
    size. Requests the client cuts short get at most 8 tokens, too few to be saved."""
    i = rng.randrange(len(PROMPTS))
    body = conversation(cfg, i, stream=stream)
    if cut:
        body["max_tokens"] = rng.randint(1, 8)
    return body


def conversation(cfg: SoakConfig, i: int, *, stream: bool = False) -> dict[str, Any]:
    lo, hi = cfg.max_tokens
    return {
        "model": SERVED,
        "messages": [{"role": "user", "content": PROMPTS[i]}],
        "max_tokens": lo + (hi - lo) * i // (len(PROMPTS) - 1),
        "temperature": 0,
        "ignore_eos": True,
        "stream": stream,
    }


async def prime(cfg: SoakConfig, node: Proc) -> None:
    """Warm a node's saved-state cache: every conversation of the soak goes through the node a
    few times, two at a time, so each is set aside when another takes its slot. Until then,
    the cache's first copy of each (~2 MB) would count as growth."""
    async with httpx.AsyncClient(base_url=node.url, timeout=cfg.request_timeout) as http:
        for _ in range(PRIME_ROUNDS):
            for i in range(0, len(PROMPTS), 2):
                bodies = [conversation(cfg, j) | {"model": MODEL} for j in (i, i + 1)]
                answers = await asyncio.gather(
                    *(http.post("/v1/chat/completions", json=b) for b in bodies)
                )
                for r in answers:
                    r.raise_for_status()


def replica_of(response: httpx.Response) -> str | None:
    route: str = response.headers.get("x-edgellm-route", "")
    for part in route.split(";"):
        key, _, value = part.strip().partition("=")
        if key == "replica":
            return value
    return None


def bad_requests(cfg: SoakConfig) -> list[tuple[str, str, bytes, set[int]]]:
    """(what, path, body, expected statuses)."""

    def js(body: dict[str, Any]) -> bytes:
        return json.dumps(body).encode()

    msgs = [{"role": "user", "content": "hi"}]
    chat = "/v1/chat/completions"

    def body(**fields: Any) -> bytes:
        return js({"model": SERVED, "messages": msgs} | fields)

    # Out-of-range values are caught by the schema (422) or, for values that need the model
    # (its vocabulary, its window), by the engine's checks (400).
    return [
        ("malformed JSON", chat, b'{"model": "soak", "messages": [', {400}),
        ("unknown model", chat, body(model="no-such"), {404}),
        ("temperature out of range", chat, body(temperature=9), {422}),
        ("negative max_tokens", chat, body(max_tokens=-1), {422}),
        ("max_tokens beyond the window", chat, body(max_tokens=cfg.ctx * 4), {400}),
        ("logit_bias id out of vocabulary", chat, body(logit_bias={"-4415": 1}), {400, 422}),
        ("oversized body", chat, b"x" * (cfg.max_body_bytes + 1024), {413}),
        ("negative token id", "/detokenize", js({"model": SERVED, "tokens": [-4415]}), {400, 422}),
        ("messages missing", chat, js({"model": SERVED}), {422}),
    ]


class Load:
    def __init__(self, cfg: SoakConfig, gateway: str) -> None:
        self.cfg = cfg
        self.gateway = gateway
        self.tally = Tally()
        self.t0 = time.monotonic()
        self.kills: list[tuple[float, str]] = []  # (monotonic time, replica URL)
        self._bad = bad_requests(cfg)
        self._seq = 0
        self._until: asyncio.Task[None] | None = None

    def _over(self, deadline: float) -> bool:
        return time.monotonic() >= deadline and (self._until is None or self._until.done())

    def _rng(self) -> random.Random:
        self._seq += 1
        return random.Random(self.cfg.seed * 1_000_003 + self._seq)

    def _client(self) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        return httpx.AsyncClient(
            base_url=self.gateway, timeout=self.cfg.request_timeout, limits=limits
        )

    def count(self, kind: str, outcome: str, status: int | None = None) -> None:
        self.tally.outcomes[f"{kind}:{outcome}"] += 1
        if status is not None:
            self.tally.statuses[f"{kind}:{status}"] += 1

    async def run(self, seconds: float, until: asyncio.Task[None] | None = None) -> None:
        """Every client loops until `seconds` have passed and `until` is done (bounded in
        requests as well)."""
        self._until = until
        deadline = time.monotonic() + seconds
        cap = int(seconds * 50) + 10  # far above what four slots serve: a bound, never the limit
        workers = [
            *(self._plain(deadline, cap) for _ in range(self.cfg.plain)),
            *(self._stream(deadline, cap, cut_after=None) for _ in range(self.cfg.stream)),
            *(self._stream(deadline, cap, cut_after=3) for _ in range(self.cfg.disconnect)),
            *(self._abandon(deadline, cap) for _ in range(self.cfg.abandon)),
            *(self._bad_client(deadline, cap) for _ in range(self.cfg.bad)),
        ]
        await asyncio.gather(*workers)

    async def _plain(self, deadline: float, cap: int) -> None:
        rng = self._rng()
        async with self._client() as client:
            for _ in range(cap):
                if self._over(deadline):
                    return
                body = chat_body(rng, self.cfg, stream=False)
                try:
                    r = await client.post("/v1/chat/completions", json=body)
                except httpx.HTTPError as exc:
                    self.count("plain", f"lost:{type(exc).__name__}")
                    self.tally.losses.append(f"plain: {type(exc).__name__}: {exc}")
                    continue
                if r.status_code in (429, 503):
                    self.count("plain", "refused", r.status_code)
                    continue
                ok = r.status_code == 200
                answer = r.json() if ok else {}
                got = answer.get("usage", {}).get("completion_tokens") if ok else None
                if ok and got == body["max_tokens"]:
                    self.count("plain", "ok", 200)
                    self.tally.tokens += got
                    hops = answer.get("route", {}).get("hops", [])
                    if any(h.get("outcome") != "ok" for h in hops):
                        self.tally.replayed += 1
                else:
                    self.count("plain", "lost", r.status_code)
                    self.tally.losses.append(f"plain: {r.status_code} {r.text[:300]}")

    async def _stream(self, deadline: float, cap: int, *, cut_after: int | None) -> None:
        kind = "stream" if cut_after is None else "disconnect"
        rng = self._rng()
        async with self._client() as client:
            for _ in range(cap):
                if self._over(deadline):
                    return
                body = chat_body(rng, self.cfg, stream=True, cut=cut_after is not None)
                limit = None if cut_after is None else rng.randint(1, cut_after)
                try:
                    await self._one_stream(client, kind, body, limit)
                except httpx.HTTPError as exc:
                    # a stream is accepted once its head arrived; before that it is a refusal
                    # the client would retry, but here none is expected at all
                    self.count(kind, f"hang-or-broken:{type(exc).__name__}")
                    self.tally.losses.append(f"{kind}: {type(exc).__name__}: {exc}")

    async def _one_stream(
        self, client: httpx.AsyncClient, kind: str, body: dict[str, Any], limit: int | None
    ) -> None:
        started = time.monotonic()
        async with client.stream("POST", "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                await r.aread()
                self.count(kind, "refused" if r.status_code in (429, 503) else "http-error")
                self.tally.statuses[f"{kind}:{r.status_code}"] += 1
                if r.status_code not in (429, 503):
                    self.tally.losses.append(f"{kind}: {r.status_code} {r.text[:300]}")
                return
            replica = replica_of(r)
            chunks = 0
            reader = decode.StreamReader()
            async for line in r.aiter_lines():
                for _ in reader.line(line):
                    chunks += 1
                    if limit is not None and chunks >= limit:
                        self.count(kind, "left")
                        return  # leaving the block closes the connection mid-stream
                if reader.error is not None:
                    break
        error = reader.error[:200] if reader.error is not None else None
        finished, done = reader.finish_reason is not None, reader.done
        if error is not None:
            cut = any(url == replica and started < t for t, url in self.kills)
            if cut:
                self.tally.cut_streams += 1
                self.count(kind, "error-event:cut-by-kill")
            else:
                self.count(kind, "error-event:unexplained")
                self.tally.unexplained_errors.append(f"{kind} on {replica}: {error}")
        elif finished and done:
            self.count(kind, "ok", 200)
        else:
            self.count(kind, "broken")
            self.tally.losses.append(f"{kind}: ended without finish_reason or error event")

    async def _abandon(self, deadline: float, cap: int) -> None:
        rng = self._rng()
        for _ in range(cap):
            if self._over(deadline):
                return
            body = chat_body(rng, self.cfg, stream=False, cut=True)
            # a fresh client each time: leaving mid-request closes its connection
            async with self._client() as client:
                try:
                    async with asyncio.timeout(rng.uniform(0.05, 1.0)):
                        r = await client.post("/v1/chat/completions", json=body)
                    self.count("abandon", "answered-first", r.status_code)
                except TimeoutError:
                    self.count("abandon", "left")
                except httpx.HTTPError as exc:
                    self.count("abandon", f"error:{type(exc).__name__}")

    async def _bad_client(self, deadline: float, cap: int) -> None:
        async with self._client() as client:
            for i in range(cap):
                if self._over(deadline):
                    return
                what, path, content, expected = self._bad[i % len(self._bad)]
                headers = {"content-type": "application/json"}
                try:
                    r = await client.post(path, content=content, headers=headers)
                except httpx.HTTPError as exc:
                    self.count("bad", f"error:{type(exc).__name__}")
                    continue
                self.tally.statuses[f"bad:{r.status_code}"] += 1
                if r.status_code in expected:
                    self.count("bad", "as-expected")
                else:
                    self.count("bad", f"unexpected:{what}:{r.status_code}")
                await asyncio.sleep(0.05)


async def restart_node(load: Load, node: Proc, gateway: str) -> Restart:
    """SIGKILL `node` while the gateway has requests outstanding on it, start it again on the
    same port and wait until the gateway has had a request answered by it."""
    replica = f"{node.url}/v1"
    outstanding = 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        outstanding = (await asyncio.to_thread(router_replicas, gateway))[replica]["outstanding"]
        if outstanding >= 2:
            break
        await asyncio.sleep(0.05)
    killed = time.monotonic()
    load.kills.append((killed, replica))
    await asyncio.to_thread(node.kill)
    marked_down: float | None = None
    while time.monotonic() - killed < 30:
        if not (await asyncio.to_thread(router_replicas, gateway))[replica]["healthy"]:
            marked_down = time.monotonic() - killed
            break
        await asyncio.sleep(0.05)
    await node.restart()
    await prime(load.cfg, node)
    ready = time.monotonic() - killed
    while True:
        state = (await asyncio.to_thread(router_replicas, gateway))[replica]
        if state["healthy"] and state["circuit"] != "open":
            before = state["requests"] - state["failures"]
            break
        if time.monotonic() - killed > TAKE_BACK_S:
            raise RuntimeError(f"the gateway did not take {node.name} back in time")
        await asyncio.sleep(0.1)
    while True:
        state = (await asyncio.to_thread(router_replicas, gateway))[replica]
        if state["requests"] - state["failures"] > before:
            break
        if time.monotonic() - killed > TAKE_BACK_S:
            raise RuntimeError(f"the gateway sent {node.name} nothing after its restart")
        await asyncio.sleep(0.1)
    return Restart(
        node.name,
        round(killed - load.t0, 1),
        outstanding,
        None if marked_down is None else round(marked_down, 2),
        round(ready, 2),
        round(time.monotonic() - killed, 2),
    )


# -- the run ------------------------------------------------------------------------------


@dataclass
class Growth:
    process: str
    baseline: str  # which quiet snapshot
    rss_mb_before: float
    rss_mb_after: float
    rss_growth_pct: float
    fds_before: int
    fds_after: int


@dataclass
class SoakReport:
    config: dict[str, Any]
    wall_s: float
    served: dict[str, int]
    tally: dict[str, Any]
    restarts: list[Restart]
    growth: list[Growth]
    node_gauges: dict[str, dict[str, float]]
    gateway_outstanding: dict[str, int]
    log_dir: str

    @property
    def losses(self) -> int:
        return len(self.tally["losses"])


async def _load_phases(
    cfg: SoakConfig, running: Cluster
) -> tuple[Load, list[Restart], list[dict[str, Snapshot]]]:
    load = Load(cfg, running.gateway.url)
    snapshots: list[dict[str, Snapshot]] = []

    async def quiet(label: str) -> None:
        await asyncio.sleep(KEEPALIVE_SETTLE_S)
        snapshots.append(snapshot(label, running.procs))

    await asyncio.gather(*(prime(cfg, node) for node in running.nodes))
    await load.run(cfg.warmup)
    await quiet("A")
    seg1 = cfg.seconds / 2
    restarts: list[Restart] = []

    async def faults() -> None:
        for i in range(cfg.restarts):
            at = load.t0 + seg1 * (i + 1) / (cfg.restarts + 2)
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            restarts.append(await restart_node(load, running.nodes[i % 2], running.gateway.url))

    load.t0 = time.monotonic()
    fault_task = asyncio.create_task(faults())
    # a restart outlasting segment 1 extends it: taking the node back needs traffic
    await load.run(seg1, until=fault_task)
    await fault_task
    await quiet("B")
    await load.run(cfg.seconds - seg1)
    await quiet("C")
    return load, restarts, snapshots


def growth_table(snapshots: list[dict[str, Snapshot]]) -> list[Growth]:
    end = snapshots[-1]
    rows = []
    for name, last in end.items():
        first = next(s[name] for s in snapshots if s[name].pid == last.pid)
        rows.append(
            Growth(
                name,
                first.label,
                round(first.rss / 2**20, 1),
                round(last.rss / 2**20, 1),
                round(100 * (last.rss - first.rss) / first.rss, 2),
                first.fds,
                last.fds,
            )
        )
    return rows


def run_soak(cfg: SoakConfig) -> SoakReport:
    log_dir = cfg.log_dir or Path(tempfile.mkdtemp(prefix="edgellm-soak-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with cluster(cfg, log_dir) as running:
        load, restarts, snapshots = asyncio.run(_load_phases(cfg, running))
        gauges = {n.name: node_gauges(n.url) for n in running.nodes}
        outstanding = {
            url: int(s["outstanding"]) for url, s in router_replicas(running.gateway.url).items()
        }
    t = load.tally
    served = {
        "plain": t.outcomes["plain:ok"],
        "stream": t.outcomes["stream:ok"],
        "total_ok": t.outcomes["plain:ok"] + t.outcomes["stream:ok"],
        "completion_tokens_plain": t.tokens,
    }
    tally = {
        "outcomes": dict(sorted(t.outcomes.items())),
        "statuses": dict(sorted(t.statuses.items())),
        "losses": t.losses,
        "unexplained_errors": t.unexplained_errors,
        "replayed_plain": t.replayed,
        "cut_streams": t.cut_streams,
    }
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    report = SoakReport(
        config,
        round(time.monotonic() - started, 1),
        served,
        tally,
        restarts,
        growth_table(snapshots),
        gauges,
        outstanding,
        str(log_dir),
    )
    (log_dir / "report.json").write_text(json.dumps(asdict(report), indent=2))
    return report


@dataclass
class Targets:
    rss_growth_pct: float = 5.0
    node_rss_growth_pct: float = 5.0
    fd_growth: int = 0


def failures(report: SoakReport, targets: Targets) -> list[str]:
    """Every target the run missed, in words (empty: all met)."""
    out = []
    if report.losses:
        out.append(f"{report.losses} accepted requests lost: {report.tally['losses'][:5]}")
    if report.tally["unexplained_errors"]:
        out.append(
            f"stream error events not caused by a kill: {report.tally['unexplained_errors']}"
        )
    unexpected = {k: v for k, v in report.tally["outcomes"].items() if "unexpected" in k}
    if unexpected:
        out.append(f"bad requests answered with an unexpected status: {unexpected}")
    refused = {k: v for k, v in report.tally["outcomes"].items() if k.endswith(":refused")}
    if refused:
        out.append(f"requests refused (429/503) although no node's queue can fill: {refused}")
    for g in report.growth:
        limit = targets.rss_growth_pct if g.process == "gateway" else targets.node_rss_growth_pct
        if g.rss_growth_pct >= limit:
            out.append(f"{g.process}: RSS grew {g.rss_growth_pct} % since snapshot {g.baseline}")
        if g.fds_after - g.fds_before > targets.fd_growth:
            out.append(f"{g.process}: descriptors {g.fds_before} -> {g.fds_after}")
    for node, gauges in report.node_gauges.items():
        if gauges.get("edgellm_requests_running", -1) != 0:
            out.append(f"{node}: edgellm_requests_running = {gauges}")
        if gauges.get("edgellm_queue_depth", -1) != 0:
            out.append(f"{node}: edgellm_queue_depth = {gauges}")
    busy = {url: n for url, n in report.gateway_outstanding.items() if n}
    if busy:
        out.append(f"gateway replicas with outstanding requests after the run: {busy}")
    if len(report.restarts) != report.config["restarts"]:
        out.append(f"{len(report.restarts)} of {report.config['restarts']} restarts done")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured load, seconds")
    parser.add_argument("--warmup", type=float, default=20.0)
    parser.add_argument("--restarts", type=int, default=1, help="node kills (alternating nodes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--log-dir", type=Path, default=None, help="process logs and report.json (default: tmp)"
    )
    parser.add_argument(
        "--node-rss-pct",
        type=float,
        default=5.0,
        help="a node's RSS growth target, %% (short runs: 10, a node is still levelling off)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args()
    cfg = SoakConfig(
        seconds=args.seconds,
        warmup=args.warmup,
        restarts=args.restarts,
        seed=args.seed,
        log_dir=args.log_dir,
    )
    # SIGTERM (as from `timeout` or a CI runner) unwinds like Ctrl-C: the servers are stopped
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    print(f"machine: {os.cpu_count()} CPUs, nice {os.nice(0)}", flush=True)
    report = run_soak(cfg)
    text = Path(report.log_dir, "report.json").read_text()
    print(text)
    if args.json is not None:
        args.json.write_text(text)
    missed = failures(report, Targets(node_rss_growth_pct=args.node_rss_pct))
    for line in missed:
        print("TARGET MISSED:", line)
    print("all targets met" if not missed else f"{len(missed)} targets missed")
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
