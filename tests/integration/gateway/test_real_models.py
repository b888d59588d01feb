"""The gateway in front of the two real bundled models (in-process) and a fake "cloud"."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from edgellm.config import EngineConfig, ModelConfig
from tests.integration.gateway.harness import Fake, Gateway, remote, start_fake, start_gateway

pytestmark = pytest.mark.integration

SMALL, LARGE = "smollm2-135m-instruct", "gemma3-270m"


@pytest.fixture(scope="module")
def cloud() -> Iterator[Fake]:
    fake = start_fake(name="cloud", reply=["cloud", " answer"])
    yield fake
    fake.served.stop()


@pytest.fixture(scope="module")
def gateway(cloud: Fake) -> Iterator[Gateway]:
    engine = EngineConfig(n_ctx=1024, n_threads=2, seed=1)
    models = [
        ModelConfig(name=SMALL, source=SMALL, tier="edge-small", engine=engine, aliases=["small"]),
        ModelConfig(name=LARGE, source=LARGE, tier="edge-large", engine=engine),
    ]
    policies: list[dict[str, Any]] = [
        {"name": "auto", "kind": "rules", "long_prompt_chars": 1500},
        {"name": "keep", "kind": "cascade", "models": [SMALL, LARGE], "threshold": -100.0},
        {"name": "climb", "kind": "cascade", "models": [SMALL, LARGE], "threshold": 1.0,
         "early_abort_tokens": 3},
    ]  # fmt: skip
    gw = start_gateway(
        {
            "models": models,
            "remote_models": [remote("cloud", [cloud.base_url], tier="cloud")],
            "policies": policies,
        },
        load_models=True,
    )
    yield gw
    gw.stop()


def ask(gw: Gateway, model: str, content: str, **extra: Any) -> Any:
    client = gw.client()
    return client.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": content}],
        max_tokens=8,
        temperature=0,
        **extra,
    )


def test_explicit_names_aliases_and_openai_client(gateway: Gateway) -> None:
    raw = ask(gateway, "small", "Say hello.")
    out = raw.parse()
    assert out.model == "small" and out.choices[0].message.content
    assert "policy=explicit" in raw.headers["x-edgellm-route"]
    assert out.model_extra["route"]["replica"] == f"engine:{SMALL}"
    ids = {m.id for m in gateway.client().models.list().data}
    assert ids == {SMALL, LARGE, "cloud"}


def test_rules_pick_each_tier_with_real_models(gateway: Gateway) -> None:
    assert ask(gateway, "auto", "Name a colour.").parse().model == SMALL
    assert ask(gateway, "auto", "Explain ```def f(x): return x*2```").parse().model == LARGE
    long = "Summarise this. " + "The edge cluster runs small models. " * 60
    assert ask(gateway, "auto", long).parse().model == "cloud"
    assert ask(gateway, "auto", long, extra_headers={"x-edgellm-private": "1"}).parse().model in {
        LARGE
    }


def test_cascade_keeps_or_escalates_and_streams_only_the_kept_tier(gateway: Gateway) -> None:
    prompt = "What is the capital of France?"
    direct = {m: ask(gateway, m, prompt).parse().choices[0].message.content for m in (SMALL, LARGE)}

    kept = ask(gateway, "keep", prompt).parse()
    route = kept.model_extra["route"]
    assert kept.model == SMALL and route["escalations"] == []
    assert route["scores"][SMALL]["n_tokens"] > 0 and route["scores"][SMALL]["mean_logprob"] < 0
    assert kept.choices[0].message.content == direct[SMALL]

    client = gateway.client()
    stream = client.chat.completions.create(
        model="climb",
        messages=[{"role": "user", "content": prompt}],
        max_tokens=8,
        temperature=0,
        stream=True,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    # none of the small model's tokens leaked into the stream (the last token of this base model
    # is a near-tie that prefix reuse can flip, so only the start is compared)
    assert text != direct[SMALL] and text[:24] == direct[LARGE][:24]
    assert all(c.model == LARGE for c in chunks)
    route = next(c.model_extra["route"] for c in chunks if c.model_extra.get("route"))
    assert route["escalations"][0]["from"] == SMALL and route["escalations"][0]["to"] == LARGE
    assert route["scores"][SMALL]["n_tokens"] == 3


def test_context_overflow_on_the_small_model_falls_back(gateway: Gateway) -> None:
    # ~1100 tokens: too long for a 1024-token window, so every edge model refuses; the rules
    # send it to the cloud anyway, and explicit names get the engine's clear 400.
    text = "edge " * 1100
    assert ask(gateway, "auto", text).parse().model == "cloud"
    with gateway.http() as http:
        r = http.post(
            "/v1/chat/completions",
            json={"model": SMALL, "messages": [{"role": "user", "content": text}], "max_tokens": 4},
        )
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
