"""Which requests stream from the upstream, and that a whole upstream answer gives the client
exactly what the streamed one gave."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.gateway.harness import Fake, Gateway, remote, start_fake, start_gateway

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
def fake() -> Iterator[Fake]:
    f = start_fake(name="up", reply=["Hello", " from", " up", "."])
    yield f
    f.served.stop()


def gateway(fake: Fake, mode: str) -> Gateway:
    return start_gateway(
        {
            "models": [],
            "remote_models": [
                remote("edge", [fake.base_url], "edge-small", upstream_streaming=mode),
                remote("edge2", [fake.base_url], "edge-large"),
            ],
            "policies": [
                {"name": "casc", "kind": "cascade", "models": ["edge", "edge2"], "threshold": -9}
            ],
        }
    )


def test_non_streamed_request_goes_upstream_whole_and_carries_the_route(fake: Fake) -> None:
    gw = gateway(fake, "auto")
    try:
        with gw.http() as http:
            r = http.post(
                "/v1/chat/completions",
                json={"model": "edge", "messages": MESSAGES, "max_tokens": 3},
            )
        assert r.status_code == 200, r.text
        sent = fake.backend.last_body
        assert "stream" not in sent and "stream_options" not in sent
        assert fake.backend.last_headers["accept"] == "application/json"
        out = r.json()
        assert out["object"] == "chat.completion" and out["model"] == "edge"
        assert out["choices"][0]["message"]["content"] == "Hello from up"
        assert out["choices"][0]["finish_reason"] == "length"
        assert out["usage"]["completion_tokens"] == 3 and out["timings"]["predicted_n"] == 3
        route = out["route"]
        assert route["model"] == "edge" and route["replica"] == fake.base_url
        assert [h["outcome"] for h in route["hops"]] == ["ok"]
        assert f"replica={fake.base_url}" in r.headers["x-edgellm-route"]
    finally:
        gw.stop()


def test_streaming_client_and_cascade_still_stream_upstream(fake: Fake) -> None:
    gw = gateway(fake, "auto")
    try:
        with gw.http() as http:
            body = {"model": "edge", "messages": MESSAGES, "stream": True}
            with http.stream("POST", "/v1/chat/completions", json=body) as s:
                s.read()
            assert s.status_code == 200 and fake.backend.last_body["stream"] is True
            # a cascade scores the small tier's tokens as they arrive: streamed, whoever asks
            r = http.post("/v1/chat/completions", json={"model": "casc", "messages": MESSAGES})
            assert r.status_code == 200, r.text
            assert fake.backend.last_body["stream"] is True
            assert fake.backend.last_body["logprobs"] is True
            assert r.json()["route"]["policy"] == "casc"
            assert r.json()["route"]["scores"]["edge"]["n_tokens"] == 4
    finally:
        gw.stop()


def _comparable(answer: dict[str, Any]) -> dict[str, Any]:
    """An answer without what differs between any two requests: ids, clock times."""
    out = {k: v for k, v in answer.items() if k not in {"id", "created"}}
    route = dict(out.pop("route"))
    route["hops"] = [{k: v for k, v in h.items() if not k.endswith("ms")} for h in route["hops"]]
    out["route"] = route
    out["timings"] = {k: v for k, v in out["timings"].items() if "ms" not in k and "per" not in k}
    return out


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"messages": MESSAGES, "logprobs": True, "top_logprobs": 2}),
        ("/v1/chat/completions", {"messages": MESSAGES, "max_completion_tokens": 2}),
        ("/v1/completions", {"prompt": "Say", "echo": True, "logprobs": 2, "max_tokens": 3}),
    ],
)
def test_whole_upstream_answer_equals_the_streamed_one(
    fake: Fake, path: str, body: dict[str, Any]
) -> None:
    """usage, timings (the upstream's counts), log-probs, text, finish reason and route: the
    same whether the upstream streamed (`upstream_streaming: always`) or answered whole."""
    answers = {}
    for mode in ("always", "auto"):
        gw = gateway(fake, mode)
        try:
            with gw.http() as http:
                r = http.post(path, json={"model": "edge", **body})
            assert r.status_code == 200, r.text
            assert ("stream" in fake.backend.last_body) is (mode == "always")
            answers[mode] = _comparable(r.json())
        finally:
            gw.stop()
    assert answers["auto"] == answers["always"]
    assert answers["auto"]["usage"]["completion_tokens"] > 0
