"""The gateway container in front of two node containers on a container network, reached by name:
`model: "auto"` answers from a replica; one node container killed under load loses no accepted
non-streamed request, its streams end with an error event, and the gateway marks it down, then
up again once the container is restarted (the scenario is tests/faults.py's, shared with the
emulated cluster)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import yaml

from tests.container.engine import Engine, unique, wait_healthy
from tests.faults import (
    chat_body,
    check_no_accepted_request_lost,
    kill_under_load,
    replica_of,
    wait_for,
)

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
            wait_for(lambda: all(r["healthy"] for r in _replicas(cluster).values()), 240)
            yield cluster
        finally:
            engine.remove(*started)


def _replicas(cluster: Cluster) -> dict[str, Any]:
    state = httpx.get(f"{cluster.url}/v1/router", timeout=10).json()
    replicas: dict[str, Any] = state["models"][MODEL]["replicas"]
    return replicas


def test_auto_answers_from_a_replica_named_in_the_route(cluster: Cluster) -> None:
    seen = set()
    with httpx.Client(base_url=cluster.url, timeout=120) as client:
        for _ in range(4):
            r = client.post("/v1/chat/completions", json=chat_body("auto", 4))
            assert r.status_code == 200, r.text
            assert r.json()["usage"]["completion_tokens"] == 4
            seen.add(replica_of(r))
        unknown = client.post("/v1/chat/completions", json=chat_body("no-such-model", 4))
        assert unknown.status_code == 404, unknown.text
    assert seen <= set(cluster.nodes.values()) and seen, seen


def _address(engine: Engine, container: str) -> str:
    return engine.run(
        "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", container
    ).stdout.strip()


def test_a_node_container_killed_under_load_loses_no_accepted_request_and_rejoins(
    engine: Engine, cluster: Cluster
) -> None:
    """The kill-under-load scenario of the emulated cluster (tests/faults.py), here with what
    only containers have: `podman kill` of the node's container, and its return after
    `podman start` under the same name, which the gateway resolves again (its address may have
    changed: the gateway's backend is the name, as a Service's DNS name is in K3s)."""
    victim, survivor = list(cluster.nodes)
    dead = cluster.nodes[victim]
    address_before = _address(engine, victim)
    run = kill_under_load(
        cluster.url,
        MODEL,
        dead,
        lambda: engine.run("kill", victim),
        lambda: bool(_replicas(cluster)[dead]["healthy"]),
        per_client=3,
        detect_within_s=HEALTH_S + 2 + MARGIN_S,
        timeout_s=180,
    )
    print(f"{victim} killed; marked down after {run.detected_s:.2f} s; {run.outcomes}")
    check_no_accepted_request_lost(run, dead, cluster.nodes[survivor])

    engine.run("start", victim)
    up_s = wait_for(lambda: bool(_replicas(cluster)[dead]["healthy"]), 240)
    address_after = _address(engine, victim)
    print(
        f"{victim} restarted ({address_before} -> {address_after}); back in the gateway's "
        f"rotation after {up_s:.2f} s"
    )
    served = set()
    with httpx.Client(base_url=cluster.url, timeout=120) as client:
        for _ in range(6):
            r = client.post("/v1/chat/completions", json=chat_body(MODEL, 4))
            assert r.status_code == 200, r.text
            served.add(replica_of(r))
    assert dead in served, served
