"""Fault scenarios through the real gateway (`edgellm serve --config`, a separate process in the
root namespace) in front of the emulated cluster: a node killed under load and rejoining, the
cloud link partitioned, a slow node, and a headless-service name whose addresses change."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from edgellm.testbed.cluster import Testbed

pytest.importorskip(
    "edgellm.gateway.router", reason="the gateway (edgellm.gateway) is not in this tree yet"
)

from edgellm.testbed.gateway import GatewayProcess
from tests.faults import (
    chat_body,
    check_no_accepted_request_lost,
    kill_under_load,
    replica_of,
    wait_for,
)

HEALTH_S = 1.0  # the gateway's health-check and DNS re-resolution interval here
MARGIN_S = 3.0  # a loaded 2-core machine: generous on every deadline
SERVICE = "smollm2.edgellm.svc.cluster.local"
MODEL = "smollm2-135m-instruct"


def _config(tb: Testbed) -> dict[str, Any]:
    assert tb.cloud is not None and tb.cloud_url is not None

    def urls(*names: str) -> list[str]:
        return [f"{tb.nodes[n].url}/v1" for n in names]

    def edge(name: str, **where: Any) -> dict[str, Any]:
        backend = {"model": MODEL, "connect_timeout_s": 1.0, "first_token_timeout_s": 30.0}
        return {
            "name": name,
            "tier": "edge-small",
            "context_length": 512,
            "backends": [backend | where],
        }

    cloud_backend = {
        "url": f"{tb.cloud_url}/v1",
        "model": tb.cloud.served_name,
        "connect_timeout_s": 1.0,
        "first_token_timeout_s": 5.0,
    }
    return {
        "models": [],
        "remote_models": [
            edge("pair", urls=urls("n1", "n2")),
            edge("fleet", urls=urls("n1", "n2", "n3")),
            edge("svc", dns=SERVICE, port=8080, resolve_interval_s=HEALTH_S),
            {
                "name": "cloud-only",
                "tier": "cloud",
                "context_length": 512,
                "backends": [cloud_backend],
            },
        ],
        "policies": [
            {"name": "fleet-load", "kind": "load", "models": ["fleet"]},
            {"name": "edge-or-cloud", "kind": "load", "models": ["pair", "cloud-only"]},
        ],
        "router": {
            "default_policy": "fleet-load",
            "health_interval_s": HEALTH_S,
            "failure_threshold": 2,
            "cooldown_s": 3.0,
            "retries": 1,
            "backoff_s": 0.05,
        },
    }


@pytest.fixture(scope="module")
def gateway(testbed: Testbed) -> Iterator[GatewayProcess]:
    testbed.set_service(SERVICE, ["n1", "n2"])
    with GatewayProcess(testbed, _config(testbed), name="fault-gateway") as gw:
        yield gw


def _router(gw: GatewayProcess) -> dict[str, Any]:
    state: dict[str, Any] = httpx.get(f"{gw.url}/v1/router", timeout=10).json()
    return state


def _replicas(gw: GatewayProcess, model: str) -> dict[str, Any]:
    replicas: dict[str, Any] = _router(gw)["models"][model]["replicas"]
    return replicas


def _url(tb: Testbed, node: str) -> str:
    return f"{tb.nodes[node].url}/v1"


def test_node_killed_under_load(testbed: Testbed, gateway: GatewayProcess) -> None:
    """No accepted request is lost except streams in flight on the dead node, which end with an
    error event; the gateway marks the node down within one health-check interval and new
    requests go to the survivor (the scenario is tests/faults.py's, shared with the container
    cluster)."""
    dead, survivor = _url(testbed, "n1"), _url(testbed, "n2")
    run = kill_under_load(
        gateway.url,
        "pair",
        dead,
        lambda: testbed.kill("n1"),
        lambda: bool(_replicas(gateway, "pair")[dead]["healthy"]),
        per_client=4,
        detect_within_s=HEALTH_S + 2 + MARGIN_S,
    )
    print(
        f"n1 killed; marked down after {run.detected_s:.2f} s; {len(run.outcomes)} requests: "
        f"{[(o.kind, o.result, o.replica) for o in run.outcomes]}"
    )
    check_no_accepted_request_lost(run, dead, survivor)
    later = [o for o in run.outcomes if o.started > run.killed_at + run.detected_s]
    assert later, "no request started after the kill was detected"


def test_killed_node_rejoins(testbed: Testbed, gateway: GatewayProcess) -> None:
    revived = _url(testbed, "n1")
    testbed.start("n1")  # returns once the node answers /health
    rejoined_s = wait_for(
        lambda: _replicas(gateway, "pair")[revived]["healthy"], timeout=HEALTH_S + MARGIN_S
    )
    print(f"n1 back in the gateway's rotation {rejoined_s:.2f} s after it was ready")
    served = set()
    with httpx.Client(base_url=gateway.url, timeout=120) as client:
        for _ in range(6):
            r = client.post("/v1/chat/completions", json=chat_body("pair", 4))
            assert r.status_code == 200, r.text
            served.add(replica_of(r))
    assert revived in served


def test_non_streamed_request_in_flight_on_a_killed_node_is_not_lost(
    testbed: Testbed, gateway: GatewayProcess
) -> None:
    """Nothing has reached the client yet, so the gateway may replay it on the survivor."""
    victim, survivor = _url(testbed, "n1"), _url(testbed, "n2")
    body = chat_body("pair", 64)
    for _ in range(6):  # until one request is alone on n1 (the order rotates)
        result: dict[str, httpx.Response] = {}

        def send(into: dict[str, httpx.Response] = result) -> None:
            into["r"] = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=180)

        thread = threading.Thread(target=send)
        thread.start()
        with contextlib.suppress(AssertionError):  # already finished: the next round retries
            wait_for(
                lambda: any(r["outstanding"] for r in _replicas(gateway, "pair").values()),
                timeout=30,
            )
        busy = [u for u, r in _replicas(gateway, "pair").items() if r["outstanding"]]
        if busy == [victim]:
            testbed.kill("n1")
            thread.join(timeout=180)
            break
        thread.join(timeout=180)
    else:
        pytest.fail("no request was ever in flight on n1 alone")
    r = result["r"]
    route = r.headers.get("x-edgellm-route", "")
    print(f"in-flight request on the killed node: {r.status_code}, route: {route}")
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 64
    assert replica_of(r) == survivor  # answered in full by the node that survived
    testbed.start("n1")
    wait_for(lambda: _replicas(gateway, "pair")[victim]["healthy"], timeout=HEALTH_S + MARGIN_S)


@contextlib.contextmanager
def _partitioned(testbed: Testbed, gateway: GatewayProcess) -> Iterator[float]:
    """The cloud link cut (frames silently dropped) until the block ends; yields the seconds the
    gateway took to mark the cloud replica down. Healed, and seen healthy again, afterwards."""
    assert testbed.cloud_url is not None
    cloud = f"{testbed.cloud_url}/v1"
    testbed.partition_cloud()
    try:
        # Health checks time out after 2 s: one interval plus that timeout.
        yield wait_for(
            lambda: not _replicas(gateway, "cloud-only")[cloud]["healthy"],
            timeout=HEALTH_S + 2 + MARGIN_S,
        )
    finally:
        testbed.heal_cloud()
    wait_for(lambda: _replicas(gateway, "cloud-only")[cloud]["healthy"], timeout=2 * MARGIN_S)


def test_cloud_partition_leaves_the_edge_serving(testbed: Testbed, gateway: GatewayProcess) -> None:
    cloud = f"{testbed.cloud_url}/v1"
    with httpx.Client(base_url=gateway.url, timeout=120) as client:
        assert (
            client.post("/v1/chat/completions", json=chat_body("cloud-only", 4)).status_code == 200
        )
        with _partitioned(testbed, gateway) as down_s:
            print(f"cloud replica marked down {down_s:.2f} s after the cut")
            for model in ("pair", "edge-or-cloud"):
                started = time.monotonic()
                r = client.post("/v1/chat/completions", json=chat_body(model, 4))
                assert r.status_code == 200, r.text
                assert replica_of(r) != cloud
                assert time.monotonic() - started < 30
        assert (
            client.post("/v1/chat/completions", json=chat_body("cloud-only", 4)).status_code == 200
        )


def test_cloud_partition_fails_cloud_only_requests_fast(
    testbed: Testbed, gateway: GatewayProcess
) -> None:
    with httpx.Client(base_url=gateway.url, timeout=120) as client, _partitioned(testbed, gateway):
        started = time.monotonic()
        r = client.post("/v1/chat/completions", json=chat_body("cloud-only", 4))
        failed_in = time.monotonic() - started
        print(f"cloud-only request during the partition: {r.status_code} in {failed_in:.2f} s")
        assert r.status_code == 503, r.text
        assert failed_in < 1.0


def test_slow_node_is_avoided_by_the_latency_aware_policy(
    testbed: Testbed, gateway: GatewayProcess
) -> None:
    slow = _url(testbed, "n1")  # first in the list: it would win every tie
    testbed.set_cpus("n1", 0.1)
    try:
        # Concurrent warm-up: the policy spreads by outstanding work, so every replica is measured.
        def warm() -> None:
            with httpx.Client(base_url=gateway.url, timeout=180) as client:
                for _ in range(2):
                    r = client.post("/v1/chat/completions", json=chat_body("fleet-load", 16))
                    assert r.status_code == 200, r.text

        threads = [threading.Thread(target=warm) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        speeds = {url: r["decode_tps"] for url, r in _replicas(gateway, "fleet").items()}
        print(f"measured decode tok/s per replica: {speeds}")
        assert speeds[slow] < min(v for u, v in speeds.items() if u != slow)
        with httpx.Client(base_url=gateway.url, timeout=120) as client:
            chosen = []
            for _ in range(6):
                r = client.post("/v1/chat/completions", json=chat_body("fleet-load", 16))
                assert r.status_code == 200, r.text
                chosen.append(replica_of(r))
        assert slow not in chosen, chosen
    finally:
        testbed.set_cpus("n1", 0.6)


def test_headless_service_address_set_changes(testbed: Testbed, gateway: GatewayProcess) -> None:
    assert set(_replicas(gateway, "svc")) == {_url(testbed, "n1"), _url(testbed, "n2")}
    testbed.set_service(SERVICE, ["n3"])  # a rollout: the old pods go, a new one is ready
    moved_s = wait_for(
        lambda: set(_replicas(gateway, "svc")) == {_url(testbed, "n3")}, timeout=HEALTH_S + MARGIN_S
    )
    print(f"gateway followed the new address set after {moved_s:.2f} s")
    with httpx.Client(base_url=gateway.url, timeout=120) as client:
        for _ in range(3):
            r = client.post("/v1/chat/completions", json=chat_body("svc", 4))
            assert r.status_code == 200, r.text
            assert replica_of(r) == _url(testbed, "n3")
    testbed.set_service(SERVICE, ["n1", "n2", "n3"])  # scaled out
    wait_for(lambda: len(_replicas(gateway, "svc")) == 3, timeout=HEALTH_S + MARGIN_S)
