"""A cascade whose cloud is unreachable, slow or dying, over HTTP against fake backends: every
request is still answered by the edge, the route says why, and the client never sees the cloud's
internal address."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.gateway.harness import Fake, Gateway, remote, start_fake, start_gateway
from tests.integration.servers import free_port

pytestmark = pytest.mark.integration

CASCADE = {
    "name": "cascade",
    "kind": "cascade",
    "models": ["small", "large", "cloud"],
    "threshold": -1.0,
    "early_abort_tokens": 2,
}


@pytest.fixture
def edge() -> Iterator[tuple[Fake, Fake]]:
    # both unsure, so that every request wants the cloud
    small = start_fake(name="small", reply=["small", " says", " hi", "."], logprob=-3.0)
    large = start_fake(name="large", reply=["large", " says", " hi", "."], logprob=-2.0)
    yield small, large
    small.served.stop()
    large.served.stop()


def gateway(edge: tuple[Fake, Fake], cloud_url: str, **policy: Any) -> Gateway:
    small, large = edge
    return start_gateway(
        {
            "models": [],
            "remote_models": [
                remote("small", [small.base_url], tier="edge-small"),
                remote("large", [large.base_url], tier="edge-large"),
                remote("cloud", [cloud_url], tier="cloud"),
            ],
            "policies": [CASCADE | policy],
        }
    )


def ask(http: httpx.Client, *, stream: bool, **extra: Any) -> tuple[int, str, dict[str, Any]]:
    """(status, text, route); a streamed error event's message is the text, prefixed 'ERROR '."""
    body = {"model": "cascade", "messages": [{"role": "user", "content": "hi"}]} | extra
    if not stream:
        r = http.post("/v1/chat/completions", json=body)
        if r.status_code != 200:
            return r.status_code, r.json()["error"]["message"], {}
        return 200, r.json()["choices"][0]["message"]["content"], r.json()["route"]
    text, route = "", {}
    with http.stream("POST", "/v1/chat/completions", json=body | {"stream": True}) as r:
        if r.status_code != 200:
            r.read()
            return r.status_code, r.json()["error"]["message"], {}
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                text += "ERROR " + chunk["error"]["message"]
            for c in chunk.get("choices", []):
                text += c.get("delta", {}).get("content") or ""
            route = chunk.get("route") or route
    return 200, text, route


def test_an_unreachable_cloud_leaves_every_request_answered_by_the_edge_fast(
    edge: tuple[Fake, Fake],
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    gw = gateway(edge, dead)
    try:
        with gw.http(timeout=30) as http:
            answers = []
            for i in range(8):
                t0 = time.perf_counter()
                status, text, route = ask(http, stream=bool(i % 2))
                answers.append((status, text, route, time.perf_counter() - t0))
            metrics = http.get("/metrics").text
            router = http.get("/v1/router").json()
    finally:
        gw.stop()
    for status, text, route, elapsed in answers:
        assert status == 200, text
        assert text == "large says hi."  # whole: resumed past the 2 tokens it was judged on
        assert route["model"] == "large" and route["degraded"] is True
        assert elapsed < 1.0
        assert "127.0.0.1" not in json.dumps(route["escalations"])
    first, later = answers[0][2], [a[2] for a in answers[1:]]
    assert first["escalations"][-1]["outcome"] == "error"  # tried: refused, circuit opened
    assert "ConnectError" in first["escalations"][-1]["reason"]
    for route in later:  # known down: skipped without a try
        assert route["escalations"][-1]["outcome"] == "down"
        assert [h["model"] for h in route["hops"]] == ["small", "large"]
    assert router["models"]["cloud"]["replicas"][dead]["circuit"] == "open"
    labels = 'model="large",policy="cascade",reason="down"'
    assert f"edgellm_gateway_degraded_answers_total{{{labels}}} 7.0" in metrics


def test_with_every_tier_down_the_error_names_no_address(edge: tuple[Fake, Fake]) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    gw = start_gateway(
        {
            "models": [],
            "remote_models": [remote("cloud", [dead], tier="cloud")],
            "policies": [CASCADE | {"models": ["cloud"]}],
        }
    )
    try:
        with gw.http() as http:
            first = ask(http, stream=False)
            later = ask(http, stream=True)
    finally:
        gw.stop()
    assert first[0] == 502 and "ConnectError" in first[1]
    assert later[0] == 503 and later[1] == "every replica of cloud is down"
    assert "127.0.0.1" not in first[1] + later[1] and str(dead) not in first[1] + later[1]


def test_a_cloud_dying_after_its_first_token_ends_the_stream_with_an_error(
    edge: tuple[Fake, Fake],
) -> None:
    cloud = start_fake(name="cloud", reply=["cloud", " says", " hi"], die_after_tokens=1)
    gw = gateway(edge, cloud.base_url)
    try:
        with gw.http() as http:
            status, text, _ = ask(http, stream=True)
    finally:
        gw.stop()
        cloud.served.stop()
    # the cloud's first token reached the client: the stream is the cloud's, cut with an error
    # event, never continued with an edge answer
    assert status == 200 and text.startswith("cloudERROR ")
    assert "says" not in text and "127.0.0.1" not in text


def test_the_escalation_deadline_per_policy_and_per_request(edge: tuple[Fake, Fake]) -> None:
    slow = start_fake(name="cloud", reply=["cloud", " answer"], first_token_delay_s=1.5)
    gw = gateway(edge, slow.base_url, escalation_deadline_s=0.2)
    try:
        with gw.http() as http:
            t0 = time.perf_counter()
            status, text, route = ask(http, stream=True)
            fast = time.perf_counter() - t0
            assert status == 200 and text == "large says hi." and fast < 1.0
            assert route["degraded"] is True, json.dumps(route)
            assert route["escalations"][-1]["outcome"] == "deadline"
            assert route["signals"]["escalation_deadline_s"] == 0.2

            status, text, route = ask(http, stream=False, escalation_deadline_s=5)
            assert status == 200 and text == "cloud answer" and route["degraded"] is False
            assert "escalation_deadline_s" not in slow.backend.last_body  # not sent upstream

            for bad in (0, -1, 601, "soon", True):
                r = http.post(
                    "/v1/chat/completions",
                    json={"model": "cascade", "messages": [{"role": "user", "content": "hi"}]}
                    | {"escalation_deadline_s": bad},
                )
                assert r.status_code == 422, bad
                assert r.json()["error"]["param"] == "escalation_deadline_s"
    finally:
        gw.stop()
        slow.served.stop()
