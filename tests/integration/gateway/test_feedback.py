"""`POST /v1/feedback` against a gateway whose cascade has an online threshold: a rated answer
reaches the rule (and its state file, and `/v1/router`); unknown, expired-or-rated ids get 404
and bad bodies 422 or 400, as OpenAI-style errors, never 500."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.gateway.harness import Fake, remote, start_fake, start_gateway

pytestmark = pytest.mark.integration


@pytest.fixture
def tiers() -> Iterator[tuple[Fake, Fake]]:
    fakes = (start_fake(name="small", reply=["small"]), start_fake(name="large", reply=["large"]))
    yield fakes
    for f in fakes:
        f.served.stop()


def config(tiers: tuple[Fake, Fake], state: Path) -> dict[str, Any]:
    small, large = tiers
    online = {"kind": "feedback", "min_feedback": 2, "escalation_cost": 0.1, "optimism": 0.0,
              "state_path": str(state), "save_interval_s": 0}  # fmt: skip
    policy = {"name": "cascade", "kind": "cascade", "threshold": -1.0, "online": online}
    return {
        "models": [],
        "remote_models": [
            remote("small", [small.base_url], tier="edge-small"),
            remote("large", [large.base_url], tier="edge-large"),
        ],
        "policies": [policy],
    }


def ask(http: Any, *, stream: bool = False) -> dict[str, Any]:
    body = {"model": "cascade", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    if not stream:
        r = http.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        return dict(r.json())
    with http.stream("POST", "/v1/chat/completions", json=body) as r:
        chunks = [json.loads(x[6:]) for x in r.iter_lines() if x.startswith("data: {")]
    return {"id": chunks[0]["id"], "route": next(c["route"] for c in chunks if "route" in c)}


def test_feedback_reaches_the_online_threshold(tiers: tuple[Fake, Fake], tmp_path: Path) -> None:
    small, _ = tiers
    state = tmp_path / "cascade-state.json"
    gw = start_gateway(config(tiers, state))
    try:
        with gw.http() as http:
            small.b.logprob = -0.1  # confident: kept
            kept = ask(http)
            assert kept["route"]["model"] == "small"
            r = http.post("/v1/feedback", json={"id": kept["id"], "correct": True})
            assert r.status_code == 200, r.text
            got = r.json()
            assert got["object"] == "feedback" and got["policy"] == "cascade"
            assert got["score"] == pytest.approx(-0.1) and got["threshold"] == -1.0
            assert got["escalated"] is False and got["first_tier_served"] is True
            assert got["outcome"] == 1.0

            small.b.logprob = -3.0  # unsure: escalated to the large tier
            escalated = ask(http, stream=True)
            assert escalated["route"]["model"] == "large"
            r = http.post("/v1/feedback", json={"id": escalated["id"], "score": 0.25})
            assert r.status_code == 200, r.text
            assert r.json()["escalated"] is True and r.json()["first_tier_served"] is False

            # each answer takes one rating
            again = http.post("/v1/feedback", json={"id": kept["id"], "correct": False})
            assert again.status_code == 404
            assert again.json()["error"]["code"] == "answer_not_found"
            assert again.json()["error"]["param"] == "id"

            router = http.get("/v1/router").json()["thresholds"]["cascade"]
            assert router["kind"] == "feedback" and router["state_file"] == str(state)
            assert router["decisions"] == 2 and router["outcomes"] == 2
            assert router["outcomes_kept"] == 1 and router["outcomes_escalated"] == 1
        saved = json.loads(state.read_text())
        assert saved["kind"] == "feedback" and saved["state"]["kept_outcomes"] == 1
    finally:
        gw.stop()
    # a restarted gateway resumes from the file
    gw = start_gateway(config(tiers, state))
    try:
        with gw.http() as http:
            router = http.get("/v1/router").json()["thresholds"]["cascade"]
            assert router["outcomes_kept"] == 1 and router["outcomes"] == 0
    finally:
        gw.stop()


def test_feedback_errors(tiers: tuple[Fake, Fake], tmp_path: Path) -> None:
    gw = start_gateway(config(tiers, tmp_path / "s.json"))
    try:
        with gw.http() as http:
            answer_id = ask(http)["id"]
            unknown = "chatcmpl-" + "0" * 32
            bad: list[tuple[object, int]] = [
                ({"id": unknown, "correct": True}, 404),
                ({"id": answer_id}, 422),  # no outcome
                ({"id": answer_id, "correct": True, "score": 1.0}, 422),  # two
                ({"id": answer_id, "score": 1.5}, 422),
                ({"id": answer_id, "score": -0.1}, 422),
                ({"id": answer_id, "correct": "yes"}, 422),
                ({"id": answer_id, "correct": 1}, 422),
                ({"id": "x" * 5000, "correct": True}, 422),
                ({"id": answer_id, "correct": True, "extra": 1}, 400),  # unknown field
                ([answer_id], 422),
                ({"correct": True}, 422),
            ]
            for body, status in bad:
                r = http.post("/v1/feedback", json=body)
                assert r.status_code == status, (body, r.text)
                assert r.json()["error"]["type"] == "invalid_request_error"
            r = http.post("/v1/feedback", content=b"{not json",
                          headers={"content-type": "application/json"})  # fmt: skip
            assert r.status_code == 400
            r = http.post("/v1/feedback", content=b'{"id": "x", "score": NaN}',
                          headers={"content-type": "application/json"})  # fmt: skip
            assert r.status_code in (400, 422)
            # none of those used the answer up
            r = http.post("/v1/feedback", json={"id": answer_id, "correct": False})
            assert r.status_code == 200 and r.json()["outcome"] == 0.0

            spec = http.get("/openapi.json").json()
            op = spec["paths"]["/v1/feedback"]["post"]
            assert {"200", "404", "422"} <= set(op["responses"])
            assert "FeedbackRequest" in spec["components"]["schemas"]
    finally:
        gw.stop()


def test_a_cascade_without_an_online_threshold_takes_no_feedback(
    tiers: tuple[Fake, Fake], tmp_path: Path
) -> None:
    cfg = config(tiers, tmp_path / "s.json")
    del cfg["policies"][0]["online"]
    gw = start_gateway(cfg)
    try:
        with gw.http() as http:
            answer_id = ask(http)["id"]
            r = http.post("/v1/feedback", json={"id": answer_id, "correct": True})
            assert r.status_code == 404
            assert http.get("/v1/router").json()["thresholds"] == {}
    finally:
        gw.stop()
