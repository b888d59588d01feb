"""Failover, retries, circuit breaking, timeouts and cancellation against fake backends."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.gateway.harness import Fake, remote, start_fake, start_gateway, wait_until

pytestmark = pytest.mark.integration

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


@pytest.fixture
def fakes() -> Iterator[list[Fake]]:
    started = [start_fake(name=f"fake{i}", reply=[f"r{i}", " ok", "."]) for i in range(3)]
    yield started
    for f in started:
        f.served.stop()


def test_openai_client_and_key_from_env(fakes: list[Fake], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_CLOUD_KEY", "sk-test-123")
    gw = start_gateway(
        {
            "models": [],
            "remote_models": [
                remote("cloud", [fakes[0].base_url], api_key_env="FAKE_CLOUD_KEY", model="gpt-x")
            ],
        }
    )
    try:
        client = gw.client()
        out = client.chat.completions.create(model="cloud", **CHAT)  # type: ignore[call-overload]
        assert out.choices[0].message.content == "r0 ok."
        assert out.usage is not None and out.usage.completion_tokens == 3
        assert fakes[0].backend.last_headers["authorization"] == "Bearer sk-test-123"
        assert fakes[0].backend.last_body["model"] == "gpt-x"
        route = out.model_extra["route"]  # type: ignore[index]
        assert route["model"] == "cloud" and route["replica"] == fakes[0].base_url
        stream = client.chat.completions.create(
            model="cloud", stream=True, stream_options={"include_usage": True}, **CHAT
        )
        chunks = list(stream)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "r0 ok."
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
        raw = client.chat.completions.with_raw_response.create(model="cloud", **CHAT)
        assert "replica=" + fakes[0].base_url in raw.headers["x-edgellm-route"]
        text = client.completions.create(model="cloud", prompt="Say", max_tokens=3)
        assert text.choices[0].text == "r0 ok."
        with gw.http() as http:
            listed = http.get("/v1/models")
        # clients learn how many replicas a model has, not where they are
        assert listed.json()["data"][0]["meta"]["replicas"] == {"total": 1, "available": 1}
        assert fakes[0].base_url not in listed.text
    finally:
        gw.stop()


def test_failover_to_next_replica_and_circuit_opens(fakes: list[Fake]) -> None:
    bad, good = fakes[0], fakes[1]
    bad.b.fail_status = 500
    gw = start_gateway(
        {
            "models": [],
            "remote_models": [remote("edge", [bad.base_url, good.base_url], tier="edge-small")],
            "router": {"failure_threshold": 2, "cooldown_s": 60, "backoff_s": 0.0},
        }
    )
    try:
        with gw.http() as http:
            for _ in range(6):
                r = http.post("/v1/chat/completions", json={"model": "edge", **CHAT})
                assert r.status_code == 200, r.text
                assert r.json()["route"]["replica"] == good.base_url
            assert bad.backend.requests == 2  # then its circuit opened
            state = http.get("/v1/router").json()["models"]["edge"]["replicas"]
            assert state[bad.base_url]["circuit"] == "open"
            metrics = http.get("/metrics").text
            assert 'edgellm_gateway_fallbacks_total{backend="' + bad.base_url in metrics
    finally:
        gw.stop()


def test_flapping_backend_loses_no_request(fakes: list[Fake]) -> None:
    fakes[0].b.fail_every = 2
    gw = start_gateway(
        {
            "models": [],
            "remote_models": [remote("edge", [fakes[0].base_url], tier="edge-small")],
            "router": {"failure_threshold": 100, "backoff_s": 0.01},
        }
    )
    try:
        with gw.http() as http:
            statuses = [
                http.post("/v1/chat/completions", json={"model": "edge", **CHAT}).status_code
                for _ in range(10)
            ]
        assert statuses == [200] * 10
        assert fakes[0].backend.requests > 10  # the failed ones were retried
    finally:
        gw.stop()


def test_ordered_fallback_edge_edge_cloud_and_timeouts(fakes: list[Fake]) -> None:
    small, large, cloud = fakes
    small.b.fail_status = 503
    large.b.first_token_delay_s = 2.0  # slower than its first-token timeout
    # A non-streamed request goes upstream whole (no first token to time), unless the backend
    # always streams; then its first-token timeout fails over as for a streaming client.
    gw = start_gateway(
        {
            "models": [],
            "remote_models": [
                remote("small", [small.base_url], tier="edge-small"),
                remote(
                    "large",
                    [large.base_url],
                    tier="edge-large",
                    first_token_timeout_s=0.3,
                    upstream_streaming="always",
                ),
                remote("cloud", [cloud.base_url], tier="cloud"),
            ],
            "router": {"retries": 0},
        }
    )
    try:
        with gw.http() as http:
            r = http.post("/v1/chat/completions", json={"model": "auto", **CHAT})
        assert r.status_code == 200, r.text
        route = r.json()["route"]
        assert [h["model"] for h in route["hops"]] == ["small", "large", "cloud"]
        assert [h["outcome"] for h in route["hops"]] == ["error", "timeout", "ok"]
        assert route["model"] == "cloud" and route["fallbacks"] == 2
        assert r.json()["choices"][0]["message"]["content"] == "r2 ok."
    finally:
        gw.stop()


def test_saturated_edge_spills_to_cloud_on_429(fakes: list[Fake]) -> None:
    fakes[0].b.fail_status = 429
    gw = start_gateway(
        {
            "models": [],
            "remote_models": [
                remote("edge", [fakes[0].base_url], tier="edge-small"),
                remote("cloud", [fakes[2].base_url], tier="cloud"),
            ],
        }
    )
    try:
        with gw.http() as http:
            r = http.post("/v1/chat/completions", json={"model": "auto", **CHAT})
            assert r.status_code == 200 and r.json()["route"]["model"] == "cloud"
            # explicit names do not fall back to another model: the 429 reaches the client
            r = http.post("/v1/chat/completions", json={"model": "edge", **CHAT})
            assert r.status_code == 429
    finally:
        gw.stop()


def test_all_replicas_down_is_a_clear_503(fakes: list[Fake]) -> None:
    fakes[0].b.fail_status = 500
    gw = start_gateway(
        {
            "models": [],
            "remote_models": [
                remote("edge", [fakes[0].base_url, "http://127.0.0.1:9/v1"], tier="edge-small")
            ],
            "router": {"retries": 1, "backoff_s": 0.01},
        }
    )
    try:
        with gw.http() as http:
            r = http.post("/v1/chat/completions", json={"model": "edge", **CHAT})
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "no_backend_available"
    finally:
        gw.stop()


def test_killed_replica_under_load_loses_no_whole_request(fakes: list[Fake]) -> None:
    doomed, survivor = fakes[0], fakes[1]
    for f in (doomed, survivor):
        f.b.token_delay_s = 0.05
    gw = start_gateway(
        {
            "models": [],
            "remote_models": [
                remote("edge", [doomed.base_url, survivor.base_url], tier="edge-small")
            ],
            "router": {"backoff_s": 0.01, "failure_threshold": 1, "cooldown_s": 60},
        }
    )
    results: list[int] = []
    stream_ends: list[str] = []

    def whole() -> None:
        with gw.http() as http:
            r = http.post("/v1/chat/completions", json={"model": "edge", **CHAT, "max_tokens": 6})
            results.append(r.status_code)

    def streamed() -> None:
        body = {"model": "edge", **CHAT, "max_tokens": 6, "stream": True}
        with gw.http() as http, http.stream("POST", "/v1/chat/completions", json=body) as r:
            lines = [x for x in r.iter_lines() if x.startswith("data:")]
        last = lines[-2] if len(lines) > 1 else ""
        stream_ends.append("error" if '"error"' in last else "ok")
        assert lines[-1] == "data: [DONE]"

    threads = [threading.Thread(target=whole) for _ in range(8)]
    threads += [threading.Thread(target=streamed) for _ in range(4)]
    for t in threads:
        t.start()
    assert wait_until(lambda: doomed.backend.active > 0, timeout=5)
    doomed.served.stop(force=True)  # the replica dies with requests in flight
    for t in threads:
        t.join(timeout=30)
    gw.stop()
    assert results == [200] * 8  # whole answers restart on the survivor
    assert len(stream_ends) == 4  # streams end cleanly: finished, or with an error event


def test_client_disconnect_cancels_upstream(fakes: list[Fake]) -> None:
    slow = fakes[0]
    slow.b.token_delay_s = 0.2
    slow.b.reply = ["r0", *[" x"] * 49]
    gw = start_gateway(
        {"models": [], "remote_models": [remote("edge", [slow.base_url], tier="edge-small")]}
    )
    try:
        body = {"model": "edge", **CHAT, "max_tokens": 50, "stream": True}
        with (
            httpx.Client(base_url=gw.url, timeout=10) as http,
            http.stream("POST", "/v1/chat/completions", json=body) as r,
        ):
            for line in r.iter_lines():
                if '"content":"r0"' in line:
                    break
        assert wait_until(lambda: slow.backend.active == 0, timeout=5)
        assert slow.backend.cancelled == 1 or slow.backend.active == 0

        async def whole_then_leave() -> None:
            async with httpx.AsyncClient(base_url=gw.url, timeout=0.5) as client:
                with pytest.raises(httpx.ReadTimeout):
                    await client.post("/v1/chat/completions", json={**body, "stream": False})

        asyncio.run(whole_then_leave())
        assert wait_until(lambda: slow.backend.active == 0, timeout=5)
    finally:
        gw.stop()


def test_active_health_check_takes_replica_out(fakes: list[Fake]) -> None:
    sick, well = fakes[0], fakes[1]
    gw = start_gateway(
        {
            "models": [],
            "remote_models": [
                {
                    "name": "edge",
                    "tier": "edge-small",
                    "backends": [{"urls": [sick.base_url, well.base_url]}],
                }
            ],
            "router": {"health_interval_s": 0.1},
        }
    )
    try:
        sick.b.healthy = False
        with gw.http() as http:
            assert wait_until(
                lambda: (
                    not http.get("/v1/router").json()["models"]["edge"]["replicas"][sick.base_url][
                        "healthy"
                    ]
                )
            )
            before = sick.backend.requests
            for _ in range(4):
                r = http.post("/v1/chat/completions", json={"model": "edge", **CHAT})
                assert json.loads(r.text)["route"]["replica"] == well.base_url
            assert sick.backend.requests == before
    finally:
        gw.stop()


def test_loglikelihood_and_tokenize_go_to_a_remote_replica(fakes: list[Fake]) -> None:
    node = fakes[1]
    gw = start_gateway(
        {
            "models": [],
            "remote_models": [
                remote("node", ["http://127.0.0.1:9/v1", node.base_url], "edge-small", model="n")
            ],
        }
    )
    try:
        with gw.http() as http:
            items = [{"context": "a", "continuation": " b"}, {"context": "c", "continuation": " d"}]
            r = http.post("/v1/loglikelihood", json={"model": "node", "items": items})
            assert r.status_code == 200, r.text
            assert r.json()["model"] == "node" and [d["logprob"] for d in r.json()["data"]] == [
                -1.0,
                -1.0,
            ]
            assert node.backend.last_body["model"] == "n"  # the upstream's own name
            r = http.post("/tokenize", json={"model": "node", "content": "one two three"})
            assert r.json() == {"tokens": [0, 1, 2]}
    finally:
        gw.stop()


def test_whole_request_timeout(fakes: list[Fake]) -> None:
    fakes[0].b.token_delay_s = 0.2
    fakes[0].b.reply = ["r", *[" x"] * 20]
    gw = start_gateway(
        {
            "models": [],
            "remote_models": [remote("edge", [fakes[0].base_url], "edge-small", timeout_s=0.5)],
            "router": {"retries": 0},
        }
    )
    try:
        with gw.http() as http:
            body = {"model": "edge", **CHAT, "max_tokens": 20}
            r = http.post("/v1/chat/completions", json=body)
            assert r.status_code == 504 and "timed out" in r.json()["error"]["message"]
            with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as s:
                lines = [x for x in s.iter_lines() if x.startswith("data:")]
            assert '"error"' in lines[-2] and lines[-1] == "data: [DONE]"
    finally:
        gw.stop()


def test_whole_answer_upstream_is_not_cut_by_the_first_token_timeout(fakes: list[Fake]) -> None:
    """A non-streamed request goes upstream whole: its first event is the end of the answer, so
    only `timeout_s` bounds it; a streaming client's request still has its first-token limit."""
    slow = fakes[0]
    slow.b.first_token_delay_s = 0.6
    gw = start_gateway(
        {
            "models": [],
            "remote_models": [
                remote("edge", [slow.base_url], "edge-small", first_token_timeout_s=0.3)
            ],
            "router": {"retries": 0},
        }
    )
    try:
        with gw.http() as http:
            r = http.post("/v1/chat/completions", json={"model": "edge", **CHAT})
            assert r.status_code == 200, r.text
            assert "stream" not in slow.backend.last_body
            assert r.json()["choices"][0]["message"]["content"] == "r0 ok."
            body = {"model": "edge", **CHAT, "stream": True}
            with http.stream("POST", "/v1/chat/completions", json=body) as s:
                s.read()
            assert s.status_code == 504 and b"no first token within 0.3 s" in s.content
    finally:
        gw.stop()


def test_whole_answer_upstream_fails_over_on_error_and_cut_connection(fakes: list[Fake]) -> None:
    """Nothing reached the client: an error status or an answer cut mid-body moves on."""
    broken, dying, good = fakes
    broken.b.fail_status = 500
    dying.b.die_after_tokens = 1
    gw = start_gateway(
        {
            "models": [],
            "remote_models": [
                remote("edge", [broken.base_url, dying.base_url, good.base_url], "edge-small")
            ],
            "router": {"retries": 0, "failure_threshold": 100},
        }
    )
    try:
        with gw.http() as http:
            for _ in range(3):  # the starting replica rotates
                r = http.post("/v1/chat/completions", json={"model": "edge", **CHAT})
                assert r.status_code == 200, r.text
                route = r.json()["route"]
                assert route["replica"] == good.base_url
                assert r.json()["choices"][0]["message"]["content"] == "r2 ok."
            assert broken.backend.requests >= 1 and dying.backend.requests >= 1
    finally:
        gw.stop()
