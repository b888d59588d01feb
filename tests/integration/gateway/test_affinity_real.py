"""Cache-aware routing over two real node replicas, and what nodes report they reused."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from edgellm.config import AffinitySettings
from tests.integration.gateway.harness import Gateway, remote, start_gateway
from tests.integration.servers import RunningServer, smollm2_config, start_server

MODEL = "smollm2-135m-instruct"
SYSTEM = {"role": "system", "content": "You answer in one short sentence about edge computing."}


def user(topic: str) -> dict[str, Any]:
    # the topic first: two conversations share nothing beyond the system message
    return {"role": "user", "content": f"{topic}: tell me about it. " + "Be concrete. " * 20}


def ask(client: httpx.Client, model: str, messages: list[Any], *, stream: bool) -> dict[str, Any]:
    """One chat completion; the answer's text, usage, timings and route, streamed or not."""
    body = {"model": model, "messages": messages, "max_tokens": 12, "temperature": 0}
    if not stream:
        r = client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        data = r.json()
        text = data["choices"][0]["message"]["content"]
        return {"text": text} | {k: data.get(k) for k in ("usage", "timings", "route")}
    body |= {"stream": True, "stream_options": {"include_usage": True}}
    out: dict[str, Any] = {"text": ""}
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = orjson.loads(line[6:])
            for c in chunk.get("choices") or []:
                out["text"] += c["delta"].get("content") or ""
            for key in ("usage", "timings", "route"):
                if chunk.get(key):
                    out[key] = chunk[key]
    return out


def cached(answer: dict[str, Any]) -> int:
    return int(answer["usage"]["prompt_tokens_details"]["cached_tokens"])


def consistent(answer: dict[str, Any]) -> None:
    """What the node says it reused is the timings' cache_n, and reused + prefilled = prompt."""
    usage, timings = answer["usage"], answer["timings"]
    assert cached(answer) == timings["cache_n"]
    assert timings["cache_n"] + timings["prompt_n"] == usage["prompt_tokens"]


@pytest.mark.parametrize("parallel", [1, 4])
@pytest.mark.parametrize("stream", [False, True])
def test_a_node_reports_the_prompt_tokens_it_reused(parallel: int, stream: bool) -> None:
    node = start_server([smollm2_config(n_threads=1, parallel=parallel)])
    try:
        with node.http() as http:
            a1 = [SYSTEM, user("routers")]
            first = ask(http, MODEL, a1, stream=stream)
            consistent(first)
            assert cached(first) == 0  # nothing of it was cached
            a2 = [*a1, {"role": "assistant", "content": first["text"]}, user("switches")]
            second = ask(http, MODEL, a2, stream=stream)
            consistent(second)
            assert cached(second) >= first["usage"]["prompt_tokens"] - 1
            # another conversation takes the only slot (parallel 1) or a free one; the first
            # conversation's next turn then reuses its cache, from a saved state if it had to go
            ask(http, MODEL, [SYSTEM, user("a different topic entirely, gardening")], stream=stream)
            a3 = [*a2, {"role": "assistant", "content": second["text"]}, user("radios")]
            third = ask(http, MODEL, a3, stream=stream)
            consistent(third)
            assert cached(third) >= second["usage"]["prompt_tokens"] - 1
            other = ask(http, MODEL, [{"role": "user", "content": "Hi there."}], stream=stream)
            consistent(other)
            assert cached(other) < 8  # at most the chat template's opening tokens
    finally:
        node.stop()


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Gateway, list[RunningServer]]]:
    nodes = [start_server([smollm2_config(n_threads=1, parallel=2)]) for _ in range(2)]
    gw = start_gateway(
        {
            "models": [],
            "remote_models": [
                remote("smol", [n.base_url for n in nodes], tier="edge-small", model=MODEL)
            ],
        }
    )
    yield gw, nodes
    gw.stop()
    for n in nodes:
        n.stop()


def conversation_turns(
    gw: Gateway, topic: str, turns: int, *, stream: bool
) -> list[dict[str, Any]]:
    answers = []
    messages: list[Any] = [SYSTEM]
    with gw.http(timeout=120) as http:
        for t in range(turns):
            messages.append(user(f"{topic}, part {t}"))
            answer = ask(http, "smol", messages, stream=stream)
            answers.append(answer)
            messages.append({"role": "assistant", "content": answer["text"]})
    return answers


@pytest.mark.parametrize("stream", [False, True])
def test_a_later_turn_lands_where_the_first_was_served_and_reuses_its_cache(
    cluster: tuple[Gateway, list[RunningServer]], stream: bool
) -> None:
    gw, _ = cluster
    gw.router.affinity["smol"].settings = AffinitySettings()
    answers = conversation_turns(gw, f"caches {stream}", 3, stream=stream)
    home = answers[0]["route"]["replica"]
    for prev, answer in itertools.pairwise(answers):
        assert answer["route"]["replica"] == home
        signal = answer["route"]["signals"]["affinity"]
        assert signal["reason"] == "cached prefix"
        assert signal["expected_cached_tokens"][home] > 0
        assert cached(answer) >= prev["usage"]["prompt_tokens"] - 1
    # negative: a new conversation is not steered by anyone's cache
    fresh = conversation_turns(gw, f"{uuid.uuid4().hex} gardening", 1, stream=stream)[0]
    assert fresh["route"]["signals"]["affinity"]["reason"] == "no cached prefix"
    assert cached(fresh) < answers[-1]["usage"]["prompt_tokens"] // 2
    with gw.http() as http:
        metrics = http.get("/metrics").text.splitlines()
    hits = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics
        if line.startswith("edgellm_gateway_cached_prompt_tokens_total{") and home in line
    ]
    assert hits and hits[0] >= sum(cached(a) for a in answers)


@pytest.mark.parametrize("stream", [False, True])
def test_a_first_turn_shorter_than_a_block_is_found_by_its_next_turn_through_its_answer(
    cluster: tuple[Gateway, list[RunningServer]], stream: bool
) -> None:
    gw, _ = cluster
    gw.router.affinity["smol"].settings = AffinitySettings()
    first = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": f"Hi {uuid.uuid4().hex[:6]}. Name one edge device, please."},
    ]
    # The prompt fills no 128-byte block, so it steers nothing; with any answer, even an empty
    # one (its assistant message is 33 bytes), the next turn's text fills one.
    assert 128 - 33 <= len(b"".join(orjson.dumps(m) for m in first)) < 128
    with gw.http(timeout=120) as http:
        a = ask(http, "smol", first, stream=stream)
        later = [*first, {"role": "assistant", "content": a["text"]}, user("and then")]
        b = ask(http, "smol", later, stream=stream)
    # only the answer, indexed as the next turn carries it, can have told where this lives
    assert b["route"]["signals"]["affinity"]["reason"] == "cached prefix"
    assert b["route"]["replica"] == a["route"]["replica"]
    assert cached(b) >= a["usage"]["prompt_tokens"] - 1


def test_round_robin_sends_the_next_turn_elsewhere_and_it_reuses_nothing(
    cluster: tuple[Gateway, list[RunningServer]],
) -> None:
    gw, _ = cluster
    gw.router.affinity["smol"].settings = AffinitySettings(enabled=False)
    try:
        answers = conversation_turns(gw, "round robin", 2, stream=False)
    finally:
        gw.router.affinity["smol"].settings = AffinitySettings()
    first, second = answers
    assert first["route"]["replica"] != second["route"]["replica"]  # idle replicas alternate
    assert "affinity" not in second["route"]["signals"]
    # only the shared system prompt can be cached on the other replica
    assert cached(second) < first["usage"]["prompt_tokens"] // 2
