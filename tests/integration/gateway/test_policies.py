"""Each policy choosing as specified, plus auth and conversations, against fake backends."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgellm.gateway.auth import hash_key
from edgellm.gateway.training import PromptClassifier
from tests.integration.gateway.harness import (
    Fake,
    remote,
    start_fake,
    start_gateway,
    wait_until,
)

pytestmark = pytest.mark.integration


def chat(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": content}]} | extra


@pytest.fixture
def tiers() -> Iterator[tuple[Fake, Fake, Fake]]:
    fakes = tuple(
        start_fake(name=n, reply=[n, " says", " hi"]) for n in ("small", "large", "cloud")
    )
    yield fakes  # type: ignore[misc]
    for f in fakes:
        f.served.stop()


def three_tiers(t: tuple[Fake, Fake, Fake], **extra: Any) -> dict[str, Any]:
    small, large, cloud = t
    return {
        "models": [],
        "remote_models": [
            remote("small", [small.base_url], tier="edge-small"),
            remote("large", [large.base_url], tier="edge-large"),
            remote("cloud", [cloud.base_url], tier="cloud"),
        ],
    } | extra


def test_rules_markers_length_and_privacy(tiers: tuple[Fake, Fake, Fake]) -> None:
    gw = start_gateway(three_tiers(tiers, policies=[{"name": "auto", "kind": "rules"}]))
    try:
        with gw.http() as http:

            def model_for(content: str, headers: dict[str, str] | None = None) -> str:
                r = http.post("/v1/chat/completions", json=chat(content), headers=headers or {})
                assert r.status_code == 200, r.text
                assert r.json()["model"] == r.json()["route"]["model"]
                return str(r.json()["route"]["model"])

            assert model_for("What is the capital of France") == "small"
            assert model_for("Fix this: ```def f(x): return x```") == "large"
            assert model_for("Why is the sky blue? And why is grass green?") == "large"
            assert model_for("word " * 600) == "cloud"
            assert model_for("word " * 600, {"x-edgellm-private": "1"}) == "large"
            assert model_for("mail alice@example.com a summary " + "word " * 600) == "large"
            r = http.post("/v1/chat/completions", json=chat("Compute 12 * 7"))
            route = r.json()["route"]
            assert route["signals"]["markers"] == ["math"] and route["policy"] == "auto"
            assert "policy=auto" in r.headers["x-edgellm-route"]
    finally:
        gw.stop()


def test_private_requests_never_reach_the_cloud(tiers: tuple[Fake, Fake, Fake]) -> None:
    small, large, cloud = tiers
    small.b.fail_status = large.b.fail_status = 500
    gw = start_gateway(three_tiers(tiers, router={"retries": 0}))
    try:
        with gw.http() as http:
            r = http.post(
                "/v1/chat/completions", json=chat("hi"), headers={"x-edgellm-private": "1"}
            )
            assert r.status_code == 503
            assert cloud.backend.requests == 0
            r = http.post("/v1/chat/completions", json=chat("hi"))
            assert r.status_code == 200 and r.json()["route"]["model"] == "cloud"
    finally:
        gw.stop()


@pytest.mark.parametrize("stream", [False, True])
def test_cascade_escalates_on_low_confidence(tiers: tuple[Fake, Fake, Fake], stream: bool) -> None:
    small, large, _ = tiers
    policy = {
        "name": "cascade",
        "kind": "cascade",
        "models": ["small", "large", "cloud"],
        "threshold": -1.0,
    }
    gw = start_gateway(three_tiers(tiers, policies=[policy]))
    try:
        with gw.http() as http:

            def ask() -> tuple[str, dict[str, Any]]:
                body = chat("hello", model="cascade", stream=stream)
                if not stream:
                    r = http.post("/v1/chat/completions", json=body)
                    return r.json()["choices"][0]["message"]["content"], r.json()["route"]
                import json

                text, route = "", {}
                with http.stream("POST", "/v1/chat/completions", json=body) as r:
                    for line in r.iter_lines():
                        if line.startswith("data: {"):
                            chunk = json.loads(line[6:])
                            for c in chunk.get("choices", []):
                                text += c.get("delta", {}).get("content") or ""
                            route = chunk.get("route") or route
                return text, route

            small.b.logprob = -0.1  # confident: kept
            text, route = ask()
            assert text == "small says hi" and route["model"] == "small"
            assert route["escalations"] == [] and route["scores"]["small"]["score"] == -0.1
            assert small.backend.last_body["logprobs"] is True  # asked for, to score

            if not stream:  # the client asked for 1 alternative; the cascade asked for 5
                r = http.post(
                    "/v1/chat/completions",
                    json=chat("hi", model="cascade", logprobs=True, top_logprobs=1),
                )
                content = r.json()["choices"][0]["logprobs"]["content"]
                assert content and all(len(c["top_logprobs"]) <= 1 for c in content)

            small.b.logprob = -3.0  # unsure: escalate; the large one is unsure too
            large.b.logprob = -2.0
            text, route = ask()
            assert text == "cloud says hi"  # the client sees only the kept tier's tokens
            assert [e["to"] for e in route["escalations"]] == ["large", "cloud"]
            assert route["threshold"] == -1.0

            large.b.logprob = -0.5
            text, route = ask()
            assert text == "large says hi" and route["tier"] == "edge-large"
            metrics = http.get("/metrics").text
            assert 'edgellm_gateway_escalations_total{policy="cascade",source="small"' in metrics
    finally:
        gw.stop()


def test_cascade_early_abort_stops_a_doomed_answer(tiers: tuple[Fake, Fake, Fake]) -> None:
    small = tiers[0]
    small.b.reply = ["w"] * 60
    small.b.token_delay_s = 0.05  # the whole answer would take 3 s
    small.b.logprob = -4.0
    policy = {
        "name": "cascade",
        "kind": "cascade",
        "models": ["small", "cloud"],
        "threshold": -1.0,
        "early_abort_tokens": 4,
    }
    gw = start_gateway(three_tiers(tiers, policies=[policy]))
    try:
        with gw.http() as http:
            t0 = time.perf_counter()
            r = http.post("/v1/chat/completions", json=chat("hi", model="cascade", max_tokens=60))
            elapsed = time.perf_counter() - t0
        route = r.json()["route"]
        assert route["model"] == "cloud"
        assert route["scores"]["small"]["n_tokens"] == 4
        assert route["scores"]["small"]["complete"] is False
        assert elapsed < 2.0  # decided after 4 tokens, not 60
    finally:
        gw.stop()


def test_load_policy_prefers_idle_replica_and_spills_to_cloud() -> None:
    busy, idle, cloud = (start_fake(name=n, reply=[n]) for n in ("busy", "idle", "cloud"))
    try:
        busy.b.first_token_delay_s = idle.b.first_token_delay_s = 1.0
        gw = start_gateway(
            {
                "models": [],
                "remote_models": [
                    remote("edge", [busy.base_url, idle.base_url], "edge-small", max_concurrency=1),
                    remote("cloud", [cloud.base_url], "cloud"),
                ],
                "policies": [{"name": "auto", "kind": "load"}],
            }
        )
        chosen: list[str] = []

        def ask() -> None:
            with gw.http() as http:
                r = http.post("/v1/chat/completions", json=chat("hi"))
                chosen.append(r.json()["route"]["replica"])

        first = threading.Thread(target=ask)
        first.start()
        time.sleep(0.3)  # one edge replica now has an outstanding request
        second = threading.Thread(target=ask)
        second.start()
        time.sleep(0.3)  # both edge replicas are now saturated (max_concurrency 1)
        ask()
        first.join()
        second.join()
        assert set(chosen[:1]) == {cloud.base_url}  # the third finished first: spilled
        assert {chosen[1], chosen[2]} == {busy.base_url, idle.base_url}
        gw.stop()
    finally:
        for f in (busy, idle, cloud):
            f.served.stop()


def test_learned_policy_routes_by_prompt(tmp_path: Path, tiers: tuple[Fake, Fake, Fake]) -> None:
    easy = [f"what is the capital of country {i}" for i in range(30)]
    hard = [f"prove the theorem about integrals number {i}" for i in range(30)]
    clf = PromptClassifier.fit(easy + hard, [True] * 30 + [False] * 30, escalation_rate=0.5)
    clf.save(tmp_path / "router.json")
    policy = {
        "name": "learned",
        "kind": "learned",
        "models": ["small", "large"],
        "path": str(tmp_path / "router.json"),
    }
    gw = start_gateway(three_tiers(tiers, policies=[policy]))
    try:
        with gw.http() as http:
            r = http.post("/v1/chat/completions", json=chat("what is the capital", model="learned"))
            assert r.json()["route"]["model"] == "small"
            r = http.post("/v1/chat/completions", json=chat("prove this theorem", model="learned"))
            assert r.json()["route"]["model"] == "large"
            assert r.json()["route"]["scores"]["p_small_ok"] < r.json()["route"]["threshold"]
    finally:
        gw.stop()


def test_api_keys_and_rate_limits(tiers: tuple[Fake, Fake, Fake]) -> None:
    key = "sk-edge-secret"
    auth = {
        "keys": [{"name": "team", "sha256": hash_key(key), "requests_per_minute": 60, "burst": 2}]
    }
    gw = start_gateway(three_tiers(tiers, auth=auth))
    try:
        with gw.http() as http:
            assert http.get("/health").status_code == 200  # open for probes
            r = http.post("/v1/chat/completions", json=chat("hi"))
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
            bad = {"Authorization": "Bearer nope"}
            assert (
                http.post("/v1/chat/completions", json=chat("hi"), headers=bad).status_code == 401
            )
            good = {"Authorization": f"Bearer {key}"}
            codes = [
                http.post("/v1/chat/completions", json=chat("hi"), headers=good).status_code
                for _ in range(3)
            ]
            assert codes == [200, 200, 429]
            r = http.post("/v1/chat/completions", json=chat("hi"), headers=good)
            assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
            assert key not in r.text
            metrics = http.get("/metrics").text
        assert 'edgellm_gateway_key_refusals_total{key="team",limit="requests"} 2.0' in metrics
        assert 'edgellm_gateway_key_tokens_total{key="team"}' in metrics
    finally:
        gw.stop()


def test_token_rate_limits_charge_every_kind_of_answer(tiers: tuple[Fake, Fake, Fake]) -> None:
    """Each fake answer is 4 tokens (1 prompt + 3 completion). A key with 6 tokens a minute may
    start two requests (6 → 2 → -2), then is refused until the refill repays its debt."""
    text = {"model": "small", "prompt": "hi"}
    cases = {  # key name: (path, body)
        "chat": ("/v1/chat/completions", chat("hi")),
        "chat-stream": ("/v1/chat/completions", chat("hi", stream=True)),
        "text": ("/v1/completions", text),
        "text-stream": ("/v1/completions", text | {"stream": True}),
    }
    auth = {
        "keys": [
            {"name": name, "sha256": hash_key(f"sk-{name}"), "tokens_per_minute": 6}
            for name in cases
        ]
    }
    gw = start_gateway(three_tiers(tiers, auth=auth))
    try:
        with gw.http() as http:
            for name, (path, body) in cases.items():
                headers = {"Authorization": f"Bearer sk-{name}"}
                answers = [http.post(path, json=body, headers=headers) for _ in range(3)]
                assert [r.status_code for r in answers] == [200, 200, 429], name
                refused = answers[2]
                assert refused.json()["error"]["code"] == "rate_limit_exceeded"
                assert "6 tokens/minute" in refused.json()["error"]["message"]
                assert 1 <= int(refused.headers["retry-after"]) <= 60
            metrics = http.get("/metrics").text
        for name in cases:  # two answers of 4 tokens, one refusal, for each key
            assert f'edgellm_gateway_key_tokens_total{{key="{name}"}} 8.0' in metrics
            refusals = f'edgellm_gateway_key_refusals_total{{key="{name}",limit="tokens"}} 1.0'
            assert refusals in metrics
    finally:
        gw.stop()


def test_a_stream_cut_short_is_charged_what_it_generated() -> None:
    """A client that leaves mid-stream pays for the tokens generated until then: a key of 6
    tokens a minute that read 8 of 40 slow tokens is in debt afterwards."""
    slow = start_fake(name="slow", reply=[f" t{i}" for i in range(40)], token_delay_s=0.05)
    auth = {"keys": [{"name": "k", "sha256": hash_key("sk-k"), "tokens_per_minute": 6}]}
    config = {"models": [], "remote_models": [remote("slow", [slow.base_url])], "auth": auth}
    gw = start_gateway(config)
    headers = {"Authorization": "Bearer sk-k"}
    body = {"model": "slow", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    try:
        with gw.http() as http:
            with http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
                assert r.status_code == 200
                tokens = 0
                for line in r.iter_lines():
                    tokens += '"content":" t' in line
                    if tokens == 8:
                        break  # leave, closing the connection
            assert wait_until(lambda: slow.backend.cancelled == 1)
        with gw.http() as http:
            r = http.post("/v1/chat/completions", json=body | {"stream": False}, headers=headers)
            assert r.status_code == 429
            assert "tokens/minute" in r.json()["error"]["message"]
    finally:
        gw.stop()
        slow.served.stop()


def test_fast_path_and_the_fastapi_stack_share_keys_limits_and_counts(
    tiers: tuple[Fake, Fake, Fake],
) -> None:
    """Chat requests are answered in front of FastAPI, invalid ones by FastAPI's own stack:
    either way one token per request, one count per answer, the same 413."""
    key = "sk-edge-secret"
    auth = {
        "keys": [{"name": "team", "sha256": hash_key(key), "requests_per_minute": 1, "burst": 3}]
    }
    gw = start_gateway(three_tiers(tiers, auth=auth))
    try:
        with gw.http() as http:
            good = {"Authorization": f"Bearer {key}"}
            r = http.post("/v1/chat/completions", json=chat("hi"), headers=good)
            assert r.status_code == 200
            r = http.post("/v1/chat/completions", json={"model": "auto"}, headers=good)
            assert r.status_code == 422  # FastAPI's answer, from the replayed body
            r = http.post(
                "/v1/chat/completions",
                content=b"x",
                headers=good | {"Content-Type": "text/plain"},
            )
            assert r.status_code == 422  # not JSON: FastAPI's route answers
            r = http.post("/v1/chat/completions", json=chat("hi"), headers=good)
            assert r.status_code == 429  # 3 requests took the burst of 3, whichever path
            r = http.post("/v1/chat/completions", json=chat("hi"))
            assert r.status_code == 401
            big = chat("x" * 5_000_000)
            assert http.post("/v1/chat/completions", json=big, headers=good).status_code == 413
            metrics = http.get("/metrics").text
        counted = {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("edgellm_requests_total{")
        }
        chat_path = 'endpoint="/v1/chat/completions"'
        assert counted[f'edgellm_requests_total{{{chat_path},model="auto",status="200"}}'] == 1
        assert counted[f'edgellm_requests_total{{{chat_path},model="",status="422"}}'] == 2
        assert counted[f'edgellm_requests_total{{{chat_path},model="",status="429"}}'] == 1
        assert counted[f'edgellm_requests_total{{{chat_path},model="",status="401"}}'] == 1
    finally:
        gw.stop()


def test_conversation_history_is_kept_and_trimmed(tiers: tuple[Fake, Fake, Fake]) -> None:
    small = tiers[0]
    cfg = three_tiers(tiers)
    cfg["remote_models"][0]["context_length"] = 120
    gw = start_gateway(cfg)
    try:
        with gw.http() as http:
            system = {"role": "system", "content": "Be brief."}
            body = {
                "model": "small",
                "conversation_id": "c1",
                "max_tokens": 3,
                "messages": [system, {"role": "user", "content": "first " * 20}],
            }
            assert http.post("/v1/chat/completions", json=body).status_code == 200
            body["messages"] = [{"role": "user", "content": "second " * 20}]
            r = http.post("/v1/chat/completions", json=body)
            sent = small.backend.last_body["messages"]
            assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
            assert sent[2]["content"] == "small says hi"
            body["messages"] = [{"role": "user", "content": "third " * 60}]
            r = http.post("/v1/chat/completions", json=body)
            sent = small.backend.last_body["messages"]
            assert sent[0] == system and sent[-1]["content"].startswith("third")
            assert len(sent) < 6  # the oldest turns went to fit the 120-token window
            assert r.json()["route"]["signals"]["conversation"]["window"] == 120
    finally:
        gw.stop()
