"""Cache-aware routing over node replicas: oasst conversations through the gateway.

Starts N `edgellm node` replicas (`--threads 1 --parallel 4`) and, for each routing mode, an
`edgellm serve --config` gateway in front of them on loopback ports, then replays oasst1 threads
turn by turn with the model's own answers (greedy, streamed), `--in-flight` conversations at a
time:

- `pinned`: no gateway; conversation k always goes to replica k mod N (the reference),
- `rr`: the gateway's order without cache awareness (least outstanding, round-robin among
  equals),
- `affinity`: the gateway's cache-aware order (gateway/affinity.py).

Per mode: prefilled / new prompt tokens on later turns (prefilled = the replica's
`timings.prompt_n`; new = this turn's prompt tokens minus the previous turn's prompt and answer),
TTFT p50/p90 of later turns, aggregate throughput (completion tokens / wall time), requests per
replica. Modes alternate within each round, and every mode's conversations carry their own
system line so nothing one mode leaves in a node's cache helps another. `--skew` adds a run
where one conversation sends many turns while the others run (by default, enough others to keep
the other in-flight places busy as long as it runs): the busiest replica's share of requests
against the mean, counted while the others run and over the whole run (a hot conversation left
alone at the end can only add to its own replica's count). `--json` writes every turn.

    .venv/bin/python benchmarks/affinity.py                 # 2 and 3 replicas, one round
    .venv/bin/python benchmarks/affinity.py --replicas 2 --rounds 3 --skew
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, percentile, start_edgellm_node, stop, wait_healthy
from edgellm.bench.workloads import OasstWorkload, WorkloadOptions

MODEL = "smollm2-135m-instruct"
MODES = ("pinned", "rr", "affinity")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Turn:
    conversation: int
    turn: int
    replica: str
    ttft_s: float
    prompt_tokens: int
    completion_tokens: int
    cached: int
    prefilled: int
    new: int | None = None  # prompt tokens not in the previous turn's prompt + answer
    reason: str = ""  # the gateway's affinity reason (route.signals.affinity.reason)
    start_s: float = 0.0  # sent, seconds after the mode's run began


@dataclass
class ModeRun:
    mode: str
    wall_s: float
    turns: list[Turn] = field(default_factory=list)

    def later(self) -> list[Turn]:
        return [t for t in self.turns if t.turn > 0]

    def prefill_ratio(self) -> float:
        later = self.later()
        new = sum(t.new or 0 for t in later)
        return sum(t.prefilled for t in later) / new if new else float("nan")

    def ttft(self, q: float) -> float:
        return percentile([t.ttft_s for t in self.later()], q)

    def throughput(self) -> float:
        return sum(t.completion_tokens for t in self.turns) / self.wall_s

    def shares(self, turns: list[Turn] | None = None) -> dict[str, int]:
        return dict(Counter(t.replica for t in (self.turns if turns is None else turns)))

    def while_others_run(self) -> list[Turn]:
        """The requests sent while the hot conversation (the first) had company: up to the
        last request of any other conversation."""
        last = max(t.start_s for t in self.turns if t.conversation != 0)
        return [t for t in self.turns if t.start_s <= last]

    def reasons(self) -> str:
        counts = Counter(t.reason for t in self.later() if t.reason)
        return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))


def chat(http: httpx.Client, url: str, model: str, messages: list[Any], max_tokens: int) -> Any:
    """One streamed chat completion: (text, ttft, usage, timings, replica)."""
    body = {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "seed": 42,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    t0 = time.perf_counter()
    ttft = None
    text, usage, timings, replica, route = "", {}, {}, url, {}
    with http.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        route = r.headers.get("x-edgellm-route", "")
        for part in route.split("; "):
            if part.startswith("replica="):
                replica = part.removeprefix("replica=")
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            for c in chunk.get("choices") or []:
                if ttft is None:
                    ttft = time.perf_counter() - t0
                text += (c.get("delta") or {}).get("content") or ""
            usage = chunk.get("usage") or usage
            timings = chunk.get("timings") or timings
            route = chunk.get("route") or route
    reason = ((route.get("signals") or {}).get("affinity") or {}).get("reason", "")
    return text, ttft or time.perf_counter() - t0, usage, timings, replica, reason


def replay(
    mode: str,
    urls: list[str],
    conversations: list[list[str]],
    *,
    in_flight: int,
    max_tokens: int,
    model: str,
) -> ModeRun:
    tag = uuid.uuid4().hex[:8]
    system = {"role": "system", "content": f"Run {tag}. You are a helpful assistant."}
    turns: list[Turn] = []
    lock = threading.Lock()

    def one(k: int, users: list[str]) -> None:
        url = urls[k % len(urls)] if mode == "pinned" else urls[0]
        messages: list[Any] = [system]
        prev_total = 0
        with httpx.Client(timeout=600) as http:
            for t, content in enumerate(users):
                messages.append({"role": "user", "content": content})
                sent = time.perf_counter() - t0
                text, ttft, usage, timings, replica, reason = chat(
                    http, url, model, messages, max_tokens
                )
                if mode == "pinned":
                    replica = url  # a node names itself engine:<model> in its route header
                prompt = int(usage["prompt_tokens"])
                done = Turn(
                    k,
                    t,
                    replica,
                    ttft,
                    prompt,
                    int(usage["completion_tokens"]),
                    int((usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)),
                    int(timings.get("prompt_n", prompt)),
                    prompt - prev_total if t else None,
                    reason,
                    sent,
                )
                prev_total = prompt + done.completion_tokens
                messages.append({"role": "assistant", "content": text})
                with lock:
                    turns.append(done)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(in_flight) as pool:
        for f in [pool.submit(one, k, c) for k, c in enumerate(conversations)]:
            f.result()
    return ModeRun(mode, time.perf_counter() - t0, turns)


def start_gateway(node_urls: list[str], routing: str) -> tuple[subprocess.Popen[bytes], str]:
    """`edgellm serve --config` over the nodes, cache-aware or not (`router.affinity`)."""
    port = free_port()
    config = {
        "server": {"host": "127.0.0.1", "port": port},
        "models": [],
        "remote_models": [
            {
                "name": MODEL,
                "tier": "edge-small",
                "backends": [
                    {
                        "urls": [f"{u}/v1" for u in node_urls],
                        "max_concurrency": 4,
                        # a host shared with other work can be slow: a timeout would move a
                        # request to another replica and measure the retry, not the routing
                        "first_token_timeout_s": 900,
                        "timeout_s": 1800,
                    }
                ],
            }
        ],
        "router": {"affinity": {"enabled": routing == "affinity"}},
    }
    path = Path(tempfile.mkdtemp()) / "gateway.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    cmd = [
        sys.executable,
        "-m",
        "edgellm",
        "serve",
        "--config",
        str(path),
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(proc, url)
    return proc, url


def conversations_of(n: int, *, skew_turns: int = 0) -> list[list[str]]:
    sessions = OasstWorkload().sessions(WorkloadOptions(conversations=86), None)
    convs = [s.user_turns for s in sessions[:n]]
    if skew_turns:
        # one conversation of many turns: the user turns of the threads not replayed, in order
        rest = [u for s in sessions[n:] for u in s.user_turns]
        convs.insert(0, rest[:skew_turns])
    return convs


def pooled(runs: list[ModeRun]) -> ModeRun:
    """The turns of several rounds as one run (for percentiles over every sample)."""
    return ModeRun(runs[0].mode, sum(r.wall_s for r in runs), [t for r in runs for t in r.turns])


def median_tps(runs: list[ModeRun]) -> float:
    return statistics.median(r.throughput() for r in runs)


def summarize(runs: dict[str, list[ModeRun]], n: int) -> None:
    ref = runs["pinned"]
    print(
        f"\n{n} replicas, {len(ref)} round(s): later turns of every round pooled (TTFT "
        "percentiles, prefilled / new); tok/s the median over rounds"
    )
    print("| routing | prefilled / new | TTFT p50 s | TTFT p90 s | tok/s | vs pinned: prefill, "
          "TTFT p90, tok/s | requests per replica |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    ref_all = pooled(ref)
    base = (ref_all.prefill_ratio(), ref_all.ttft(0.9), median_tps(ref))
    for mode, rs in runs.items():
        merged = pooled(rs)
        ratio = merged.prefill_ratio()
        p50 = merged.ttft(0.5)
        p90 = merged.ttft(0.9)
        tps = median_tps(rs)
        shares = "/".join(str(v) for v in sorted(rs[-1].shares().values(), reverse=True))
        print(
            f"| {mode} | {ratio:.2f} | {p50:.2f} | {p90:.2f} | {tps:.1f} | "
            f"{ratio / base[0]:.2f}x, {p90 / base[1]:.2f}x, {tps / base[2]:.2f}x | {shares} |"
        )


def busiest(shares: dict[str, int], n: int) -> float:
    counts = list(shares.values()) + [0] * (n - len(shares))
    return max(counts) / (sum(counts) / n)


def skew_summary(runs: dict[str, list[ModeRun]], n: int) -> None:
    print(f"\nskewed load, {n} replicas: one conversation of many turns among the others")
    print(
        "| routing | busiest share / mean, while others run | whole run | requests per "
        "replica (whole run) | tok/s | prefilled / new | TTFT p90 s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for mode, rs in runs.items():
        during = statistics.median(busiest(r.shares(r.while_others_run()), n) for r in rs)
        whole = statistics.median(busiest(r.shares(), n) for r in rs)
        shares = "/".join(str(v) for v in sorted(rs[-1].shares().values(), reverse=True))
        merged = pooled(rs)
        print(
            f"| {mode} | {during:.2f} | {whole:.2f} | {shares} | "
            f"{median_tps(rs):.1f} | "
            f"{merged.prefill_ratio():.2f} | "
            f"{merged.ttft(0.9):.2f} |"
        )


def dump(path: str, runs: list[ModeRun]) -> None:
    """Every turn of every run, for a look at what the summary medians hide."""
    out = [{"mode": r.mode, "wall_s": r.wall_s, "turns": [vars(t) for t in r.turns]} for r in runs]
    Path(path).write_text(json.dumps(out, indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--replicas", default="2,3", help="replica counts to run, e.g. 2,3")
    p.add_argument("--conversations", type=int, default=8, help="oasst threads per mode")
    p.add_argument("--in-flight", type=int, default=4, help="conversations at a time")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--rounds", type=int, default=1, help="alternating rounds of every mode")
    p.add_argument("--parallel", type=int, default=4, help="each node's --parallel")
    p.add_argument("--skew", action="store_true", help="also the skewed-load case")
    p.add_argument("--skew-turns", type=int, default=16, help="turns of the hot conversation")
    p.add_argument("--skew-only", action="store_true", help="only the skewed-load case")
    p.add_argument(
        "--skew-others",
        type=int,
        default=0,
        help="ordinary conversations beside the hot one (default: enough to keep the other "
        "in-flight places busy for as long as the hot conversation runs)",
    )
    p.add_argument("--json", help="write every turn of every run to this file")
    args = p.parse_args()
    print(machine_line())
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load average at start: {load} (a host shared with other work slows every mode)")
    print(
        f"{MODEL}, nodes --threads 1 --parallel {args.parallel} --ctx 4096; "
        f"{args.conversations} oasst threads, {args.in_flight} in flight, "
        f"max_tokens {args.max_tokens}, greedy, streamed"
    )
    every: list[ModeRun] = []
    for n in [int(x) for x in args.replicas.split(",")]:
        ports = [free_port() for _ in range(n)]
        nodes = [
            start_edgellm_node(MODEL, threads=1, port=pt, parallel=args.parallel, ctx=4096)
            for pt in ports
        ]
        node_urls = [f"http://127.0.0.1:{pt}" for pt in ports]
        gateways = {m: start_gateway(node_urls, m) for m in ("rr", "affinity")}
        try:
            convs = conversations_of(args.conversations)
            runs: dict[str, list[ModeRun]] = {m: [] for m in MODES}
            for rnd in range(0 if args.skew_only else args.rounds):
                order = MODES[rnd % 3 :] + MODES[: rnd % 3]
                for mode in order:
                    urls = node_urls if mode == "pinned" else [gateways[mode][1]]
                    run = replay(
                        mode,
                        urls,
                        convs,
                        in_flight=args.in_flight,
                        max_tokens=args.max_tokens,
                        model=MODEL,
                    )
                    runs[mode].append(run)
                    print(
                        f"round {rnd + 1} {mode}: {len(run.turns)} requests in "
                        f"{run.wall_s:.1f} s, prefilled/new {run.prefill_ratio():.2f}; "
                        f"later turns: {run.reasons() or '-'}",
                        flush=True,
                    )
            if not args.skew_only:
                summarize(runs, n)
            every += [r for rs in runs.values() for r in rs]
            if args.skew or args.skew_only:
                # oasst threads have 3 user turns: the others' turns match the hot one's
                others = args.skew_others or math.ceil((args.in_flight - 1) * args.skew_turns / 3)
                skewed = conversations_of(others, skew_turns=args.skew_turns)
                skew_runs: dict[str, list[ModeRun]] = {m: [] for m in ("rr", "affinity")}
                for rnd in range(args.rounds):
                    for mode in ("rr", "affinity") if rnd % 2 == 0 else ("affinity", "rr"):
                        run = replay(
                            mode,
                            [gateways[mode][1]],
                            skewed,
                            in_flight=args.in_flight,
                            max_tokens=args.max_tokens,
                            model=MODEL,
                        )
                        skew_runs[mode].append(run)
                skew_summary(skew_runs, n)
                every += [r for rs in skew_runs.values() for r in rs]
        finally:
            for proc, _ in gateways.values():
                stop(proc)
            for node in nodes:
                stop(node)
            if args.json:
                dump(args.json, every)


if __name__ == "__main__":
    main()
