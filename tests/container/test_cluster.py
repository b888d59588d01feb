"""The gateway container in front of two node containers on a container network, reached by name:
`model: "auto"` answers from a replica; one node killed under load loses no accepted non-streamed
request, its streams end with an error event, and the gateway marks it down, then up again once
it is restarted."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import yaml

from tests.container.engine import Engine, unique, wait_healthy

MODEL = "smollm2-135m-instruct"
HEALTH_S = 1.0
MARGIN_S = 5.0  # a loaded 2-core machine: generous on every deadline


@dataclass
class Cluster:
    gateway: str
    url: str
    nodes: dict[str, str]  # container name -> the backend URL the gateway uses


def gateway_config(nodes: list[str]) -> dict[str, Any]:
    backend = {
        "urls": [f"http://{n}:8080/v1" for n in nodes],
        "connect_timeout_s": 1.0,
        "first_token_timeout_s": 60.0,
    }
    return {
        "server": {"host": "0.0.0.0", "port": 8080},
        "models": [],
        "remote_models": [
            {"name": MODEL, "tier": "edge-small", "context_length": 2048, "backends": [backend]}
        ],
        "policies": [{"name": "auto", "kind": "load", "models": [MODEL]}],
        "router": {
            "default_policy": "auto",
            "health_interval_s": HEALTH_S,
            "failure_threshold": 2,
            "cooldown_s": 3.0,
            "retries": 1,
            "backoff_s": 0.05,
        },
    }


@pytest.fixture(scope="module")
def cluster(
    engine: Engine, image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    config = tmp_path_factory.mktemp("gateway") / "gateway.yaml"
    started: list[str] = []
    with engine.network() as net:
        try:
            nodes = [unique("node-a"), unique("node-b")]
            for node in nodes:
                started.append(node)
                engine.run(
                    "run", "-d", "--name", node, "--network", net, "--memory", "1g",
                    "--cpus", "1", image, "node", "--model", MODEL, "--host", "0.0.0.0",
                    "--port", "8080", "--threads", "1", "--ctx", "2048", "--parallel", "2",
                )  # fmt: skip
            config.write_text(yaml.safe_dump(gateway_config(nodes)))
            config.chmod(0o644)
            gateway = unique("gateway")
            started.append(gateway)
            engine.run(
                "run", "-d", "--name", gateway, "--network", net, "--memory", "512m",
                "--cpus", "1", "-p", "127.0.0.1::8080",
                "-v", f"{config}:/etc/edgellm/gateway.yaml:ro", image,
                "serve", "--config", "/etc/edgellm/gateway.yaml",
            )  # fmt: skip
            url = f"http://127.0.0.1:{engine.host_port(gateway)}"
            wait_healthy(engine, gateway, url)
            cluster = Cluster(gateway, url, {n: f"http://{n}:8080/v1" for n in nodes})
            # Both replicas loaded and seen healthy by the gateway.
            _wait_for(lambda: all(r["healthy"] for r in _replicas(cluster).values()), 240)
            yield cluster
        finally:
            engine.remove(*started)


def _replicas(cluster: Cluster) -> dict[str, Any]:
    state = httpx.get(f"{cluster.url}/v1/router", timeout=10).json()
    replicas: dict[str, Any] = state["models"][MODEL]["replicas"]
    return replicas


def _wait_for(predicate: Callable[[], bool], timeout: float) -> float:
    start = time.monotonic()
    while True:
        try:
            if predicate():
                return time.monotonic() - start
        except (httpx.HTTPError, KeyError):
            pass
        assert time.monotonic() - start < timeout, "condition not reached in time"
        time.sleep(0.1)


def _replica(response: httpx.Response) -> str | None:
    route: str = response.headers.get("x-edgellm-route", "")
    for part in route.split(";"):
        key, _, value = part.strip().partition("=")
        if key == "replica":
            return value
    return None


def _body(model: str, max_tokens: int, *, stream: bool = False) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "Count to ten."}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": stream,
    }


def test_auto_answers_from_a_replica_named_in_the_route(cluster: Cluster) -> None:
    seen = set()
    with httpx.Client(base_url=cluster.url, timeout=120) as client:
        for _ in range(4):
            r = client.post("/v1/chat/completions", json=_body("auto", 4))
            assert r.status_code == 200, r.text
            assert r.json()["usage"]["completion_tokens"] == 4
            seen.add(_replica(r))
        unknown = client.post("/v1/chat/completions", json=_body("no-such-model", 4))
        assert unknown.status_code == 404, unknown.text
    assert seen <= set(cluster.nodes.values()) and seen, seen


@dataclass
class Outcome:
    kind: str
    started: float
    status: int
    replica: str | None
    result: str  # ok | error-event | broken | http-error | the body of a failed answer


def _stream(
    client: httpx.Client, started: float, on_token: Callable[[str | None], None]
) -> Outcome:
    with client.stream("POST", "/v1/chat/completions", json=_body(MODEL, 64, stream=True)) as r:
        if r.status_code != 200:
            r.read()
            return Outcome("stream", started, r.status_code, None, "http-error")
        replica = _replica(r)
        finished = done = errored = False
        for line in r.iter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                done = True
                continue
            chunk = json.loads(data)
            errored |= "error" in chunk
            finished |= any(c.get("finish_reason") for c in chunk.get("choices") or [])
            if any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or []):
                on_token(replica)
        result = "ok" if finished and done else "error-event" if errored else "broken"
        return Outcome("stream", started, 200, replica, result)


def test_a_node_container_killed_under_load_loses_no_accepted_request_and_rejoins(
    engine: Engine, cluster: Cluster
) -> None:
    victim, survivor = list(cluster.nodes)
    dead = cluster.nodes[victim]
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    streaming_from_dead = threading.Event()

    def on_token(replica: str | None) -> None:
        if replica == dead:
            streaming_from_dead.set()

    def worker(kind: str, count: int) -> None:
        with httpx.Client(base_url=cluster.url, timeout=180) as client:
            for _ in range(count):
                started = time.monotonic()
                if kind == "stream":
                    outcome = _stream(client, started, on_token)
                else:
                    r = client.post("/v1/chat/completions", json=_body(MODEL, 12))
                    ok = r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 12
                    outcome = Outcome(
                        "plain", started, r.status_code, _replica(r), "ok" if ok else r.text[:200]
                    )
                with lock:
                    outcomes.append(outcome)

    threads = [threading.Thread(target=worker, args=(k, 3)) for k in ["plain", "stream"] * 2]
    for t in threads:
        t.start()
    assert streaming_from_dead.wait(timeout=180), f"no stream reached {victim}"
    killed_at = time.monotonic()
    engine.run("kill", victim)
    down_s = _wait_for(lambda: not _replicas(cluster)[dead]["healthy"], HEALTH_S + 2 + MARGIN_S)
    for t in threads:
        t.join(timeout=400)
    assert not any(t.is_alive() for t in threads), "a client hung"
    print(f"{victim} killed; marked down after {down_s:.2f} s; {outcomes}")

    assert len(outcomes) == 4 * 3
    assert any(o.result == "error-event" for o in outcomes), outcomes  # the cut stream
    for o in outcomes:
        assert o.status == 200, o
        if o.kind == "plain":
            assert o.result == "ok", o  # replayed on the survivor if it was on the victim
        else:
            assert o.result in {"ok", "error-event"}, o
            if o.result == "error-event":
                assert o.started < killed_at and o.replica == dead, o
    later = [o for o in outcomes if o.started > killed_at + down_s]
    assert all(o.replica == cluster.nodes[survivor] for o in later), later

    engine.run("start", victim)
    up_s = _wait_for(lambda: _replicas(cluster)[dead]["healthy"], 240)
    print(f"{victim} restarted; back in the gateway's rotation after {up_s:.2f} s")
    served = set()
    with httpx.Client(base_url=cluster.url, timeout=120) as client:
        for _ in range(6):
            r = client.post("/v1/chat/completions", json=_body(MODEL, 4))
            assert r.status_code == 200, r.text
            served.add(_replica(r))
    assert dead in served, served
