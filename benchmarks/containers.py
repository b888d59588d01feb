"""The cost of containers: a chat's first-token latency through a gateway container and a node
container on a container network, against the same two processes run bare on 127.0.0.1, in
alternating rounds; the node container's cold start to /health 200 and its memory under load
against its limit.

Both set-ups run the same image's code and the same command lines (one thread, `--parallel 2`).
The containers get the whole machine's CPUs (`--cpus 2`), so only what the container adds is
measured; the node container has the 1 GiB memory limit of the manifests.

    .venv/bin/python benchmarks/containers.py --rounds 6 --requests 10

It needs the image (`make image IMAGE=...`, default localhost/edgellm:test as the container suite
builds it) and podman or docker (deploy/image/env.sh settings).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine_line, stop, stream, wait_healthy  # noqa: E402
from tests.container.engine import Engine, pick_engine, unique  # noqa: E402
from tests.container.engine import wait_healthy as wait_container  # noqa: E402

from edgellm.config import EngineConfig  # noqa: E402
from edgellm.deploy.launch import free_port, node_command, served_model  # noqa: E402

MODEL = "smollm2-135m-instruct"
NODE_ARGS = ["--threads", "1", "--ctx", "2048", "--parallel", "2"]
MEMORY_LIMIT = "1g"


def gateway_config(node_url: str, port: int, host: str) -> dict[str, Any]:
    return {
        "server": {"host": host, "port": port},
        "models": [],
        "remote_models": [
            {
                "name": MODEL,
                "tier": "edge-small",
                "context_length": 2048,
                "backends": [{"url": node_url}],
            }
        ],
        "policies": [{"name": "auto", "kind": "load", "models": [MODEL]}],
        "router": {"default_policy": "auto", "health_interval_s": 1},
    }


@contextmanager
def bare(tmp: Path) -> Iterator[str]:
    node_port, gw_port = free_port(), free_port()
    engine = EngineConfig(n_threads=1, n_ctx=2048, parallel=2)
    node = subprocess.Popen(node_command(served_model(MODEL, engine=engine), port=node_port))
    gateway = None
    try:
        wait_healthy(node, f"http://127.0.0.1:{node_port}")
        config = tmp / "bare.yaml"
        config.write_text(
            yaml.safe_dump(gateway_config(f"http://127.0.0.1:{node_port}/v1", gw_port, "127.0.0.1"))
        )
        cmd = [sys.executable, "-m", "edgellm", "serve", "--config", str(config),
               "--log-level", "warning"]  # fmt: skip
        gateway = subprocess.Popen(cmd)
        wait_healthy(gateway, f"http://127.0.0.1:{gw_port}")
        yield f"http://127.0.0.1:{gw_port}"
    finally:
        for proc in (gateway, node):
            if proc is not None:
                stop(proc)


@contextmanager
def contained(
    engine: Engine, image: str, tmp: Path, cold: list[float]
) -> Iterator[tuple[str, str]]:
    names: list[str] = []
    net = unique("edgellm-bench")
    engine.run("network", "create", net)
    try:
        node = unique("node")
        names.append(node)
        started = time.monotonic()
        engine.run(
            "run", "-d", "--name", node, "--network", net, "--memory", MEMORY_LIMIT,
            "--cpus", "2", "-p", "127.0.0.1::8080", image, "node", "--model", MODEL,
            "--host", "0.0.0.0", "--port", "8080", *NODE_ARGS,
        )  # fmt: skip
        wait_container(engine, node, f"http://127.0.0.1:{engine.host_port(node)}")
        cold.append(time.monotonic() - started)
        config = tmp / "contained.yaml"
        config.write_text(yaml.safe_dump(gateway_config(f"http://{node}:8080/v1", 8080, "0.0.0.0")))
        config.chmod(0o644)
        gateway = unique("gateway")
        names.append(gateway)
        engine.run(
            "run", "-d", "--name", gateway, "--network", net, "--cpus", "2",
            "-p", "127.0.0.1::8080", "-v", f"{config}:/etc/edgellm/gateway.yaml:ro", image,
            "serve", "--config", "/etc/edgellm/gateway.yaml", "--log-level", "warning",
        )  # fmt: skip
        url = f"http://127.0.0.1:{engine.host_port(gateway)}"
        wait_container(engine, gateway, url)
        yield url, node
    finally:
        engine.remove(*names)
        engine.run("network", "rm", "-f", net, check=False)


def ttfts(url: str, requests: int, max_tokens: int) -> list[float]:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Describe the sea in one sentence."}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    with httpx.Client(base_url=url, timeout=120) as http:
        stream(http, "/v1/chat/completions", body)  # warm-up: the first request loads caches
        return [stream(http, "/v1/chat/completions", body).ttft for _ in range(requests)]


def rss_under_load(engine: Engine, url: str, node: str, seconds: float) -> int:
    """The node container's peak memory (cgroup) while 4 clients keep its 2 slots busy."""
    stop_at = time.monotonic() + seconds
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Tell a long story about the sea."}],
        "max_tokens": 200,
        "ignore_eos": True,
    }

    def client() -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            while time.monotonic() < stop_at:
                http.post("/v1/chat/completions", json=body)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    peak = 0
    while time.monotonic() < stop_at:
        peak = max(peak, engine.rss_bytes(node))
        time.sleep(1)
    for t in threads:
        t.join()
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--image", default=os.environ.get("EDGELLM_TEST_IMAGE", "localhost/edgellm:test")
    )
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--load-seconds", type=float, default=30)
    args = parser.parse_args()
    name, why = pick_engine()
    if name is None:
        sys.exit(f"no container engine: {why}")
    engine = Engine(name)
    print(machine_line())
    print(f"engine: {name}; image: {args.image}")
    per_round: dict[str, list[float]] = {"bare": [], "containers": []}
    cold: list[float] = []
    peak = 0
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for i in range(args.rounds):
            order = ["bare", "containers"] if i % 2 == 0 else ["containers", "bare"]
            for kind in order:
                if kind == "bare":
                    with bare(tmp) as url:
                        values = ttfts(url, args.requests, args.max_tokens)
                else:
                    with contained(engine, args.image, tmp, cold) as (url, node):
                        values = ttfts(url, args.requests, args.max_tokens)
                        if i == 0:
                            peak = rss_under_load(engine, url, node, args.load_seconds)
                per_round[kind].append(statistics.median(values) * 1000)
                print(f"round {i + 1} {kind}: median TTFT {per_round[kind][-1]:.1f} ms")
    bare_ms = statistics.median(per_round["bare"])
    cont_ms = statistics.median(per_round["containers"])
    print(
        f"first-token latency through gateway + node, median of {args.rounds} round medians "
        f"({args.requests} streamed requests each): containers {cont_ms:.1f} ms, bare "
        f"{bare_ms:.1f} ms, ratio {cont_ms / bare_ms:.3f}"
    )
    print(f"rounds (ms): containers {'/'.join(f'{v:.0f}' for v in per_round['containers'])}, "
          f"bare {'/'.join(f'{v:.0f}' for v in per_round['bare'])}")  # fmt: skip
    print(
        f"node container cold start to /health 200: median {statistics.median(cold):.1f} s "
        f"(min {min(cold):.1f}, max {max(cold):.1f}, {len(cold)} starts)"
    )
    print(
        f"node container peak memory under load ({args.load_seconds:.0f} s, 4 clients, 2 slots): "
        f"{peak / 2**20:.0f} MiB of its {MEMORY_LIMIT} limit ({peak / 2**30:.1%})"
    )


if __name__ == "__main__":
    main()
