"""The node server with the real SmolLM2 model, driven by the official `openai` client."""

from __future__ import annotations

import math

import openai
import pytest

from tests.integration.servers import RunningServer

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "Name three colours."}]


def test_models_and_health(smol_server: RunningServer, smol_client: openai.OpenAI) -> None:
    models = smol_client.models.list()
    ids = [m.id for m in models.data]
    assert ids == [MODEL]
    meta = models.data[0].model_extra["meta"]  # type: ignore[index]
    assert meta["n_ctx"] == 2048 and meta["aliases"] == ["smollm2"]
    with smol_server.http() as http:
        r = http.get("/health")
        assert r.status_code == 200 and r.json()["status"] == "ok"


def test_chat_non_streaming_has_usage_and_timings(smol_client: openai.OpenAI) -> None:
    r = smol_client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        temperature=0,
        max_tokens=40,  # type: ignore[arg-type]
    )
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content and choice.message.content.strip()
    assert choice.finish_reason in {"stop", "length"}
    assert r.usage is not None
    assert r.usage.prompt_tokens > 5
    assert 0 < r.usage.completion_tokens <= 40
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    timings = r.model_extra["timings"]  # type: ignore[index]
    assert timings["predicted_n"] == r.usage.completion_tokens
    assert timings["prompt_n"] + timings["cache_n"] == r.usage.prompt_tokens
    assert timings["prompt_ms"] > 0 and timings["prompt_per_second"] > 0
    assert timings["ttft_ms"] >= timings["queue_ms"]
    if r.usage.completion_tokens > 1:
        assert timings["predicted_per_second"] > 0


def test_alias_selects_the_same_model(smol_client: openai.OpenAI) -> None:
    r = smol_client.chat.completions.create(
        model="smollm2",
        messages=QUESTION,
        temperature=0,
        max_tokens=3,  # type: ignore[arg-type]
    )
    assert r.model == "smollm2"
    assert r.usage is not None and r.usage.completion_tokens >= 1


def test_greedy_decoding_is_deterministic_and_streaming_matches(
    smol_client: openai.OpenAI,
) -> None:
    kwargs = {"model": MODEL, "messages": QUESTION, "temperature": 0, "max_tokens": 48}
    a = smol_client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
    b = smol_client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
    assert a.choices[0].message.content == b.choices[0].message.content
    # greedy decoding does not depend on a seed
    seeded = {
        smol_client.chat.completions.create(**kwargs | {"seed": seed}).choices[0].message.content  # type: ignore[call-overload]
        for seed in (1, 2)
    }
    assert seeded == {a.choices[0].message.content}

    chunks = list(
        smol_client.chat.completions.create(
            **kwargs, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == a.choices[0].message.content
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1
    assert finals[0].choices[0].finish_reason == a.choices[0].finish_reason
    assert finals[0].model_extra["timings"]["predicted_n"] == a.usage.completion_tokens  # type: ignore[index,union-attr]
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert usage_chunk.usage.completion_tokens == a.usage.completion_tokens  # type: ignore[union-attr]
    # without include_usage, no chunk carries usage
    plain = list(smol_client.chat.completions.create(**kwargs, stream=True))
    assert all(c.usage is None for c in plain)


def test_max_tokens_caps_generation(smol_client: openai.OpenAI) -> None:
    r = smol_client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,  # type: ignore[arg-type]
        temperature=0,
        max_tokens=5,
        extra_body={"ignore_eos": True},
    )
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None and r.usage.completion_tokens == 5


def test_stop_sequence_ends_the_answer(smol_client: openai.OpenAI) -> None:
    free = (
        smol_client.chat.completions.create(
            model=MODEL,
            messages=QUESTION,
            temperature=0,
            max_tokens=40,  # type: ignore[arg-type]
        )
        .choices[0]
        .message.content
    )
    assert free and len(free) > 4
    stop = free[2:4]
    r = smol_client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        temperature=0,
        max_tokens=40,
        stop=[stop],  # type: ignore[arg-type]
    )
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content == free[: free.index(stop)]


def test_seeded_sampling_is_reproducible(smol_client: openai.OpenAI) -> None:
    kwargs = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Write a word."}],
        "temperature": 1.0,
        "max_tokens": 24,
        "seed": 1234,
    }
    a = smol_client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
    b = smol_client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
    assert a.choices[0].message.content == b.choices[0].message.content
    # and the seed is what fixes it: other seeds give other texts (24 sampled tokens each)
    others = {
        smol_client.chat.completions.create(**kwargs | {"seed": seed}).choices[0].message.content  # type: ignore[call-overload]
        for seed in (1, 2, 3)
    }
    assert len(others - {a.choices[0].message.content}) >= 2


def test_chat_logprobs_with_top_alternatives(smol_client: openai.OpenAI) -> None:
    r = smol_client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,  # type: ignore[arg-type]
        temperature=0,
        max_tokens=8,
        logprobs=True,
        top_logprobs=3,
    )
    content = r.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None
    assert r.usage is not None
    # the end-of-generation token, if any, is counted but has no text, so no entry
    assert len(content) in {r.usage.completion_tokens, r.usage.completion_tokens - 1}
    text = "".join(t.token for t in content)
    assert text == r.choices[0].message.content
    for tok in content:
        assert tok.logprob <= 0
        assert len(tok.top_logprobs) == 3
        tops = [t.logprob for t in tok.top_logprobs]
        assert tops == sorted(tops, reverse=True)
        # greedy decoding picks the most likely token
        assert tok.top_logprobs[0].token == tok.token
        assert math.isclose(tok.top_logprobs[0].logprob, tok.logprob, abs_tol=1e-5)
        assert bytes(tok.bytes or []) == tok.token.encode()


def test_completions_text_prompt_stream_and_logprobs(smol_client: openai.OpenAI) -> None:
    prompt = "The capital of France is"
    r = smol_client.completions.create(
        model=MODEL, prompt=prompt, temperature=0, max_tokens=8, logprobs=2
    )
    choice = r.choices[0]
    assert choice.text
    lp = choice.logprobs
    assert lp is not None and lp.tokens and lp.token_logprobs and lp.top_logprobs
    assert "".join(lp.tokens) == choice.text
    assert all(len(t) <= 2 for t in lp.top_logprobs if t)
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    streamed = list(
        smol_client.completions.create(
            model=MODEL, prompt=prompt, temperature=0, max_tokens=8, stream=True
        )
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == choice.text
    echoed = smol_client.completions.create(
        model=MODEL, prompt=prompt, temperature=0, max_tokens=8, echo=True
    )
    assert echoed.choices[0].text == prompt + choice.text


def test_completions_accepts_token_ids(smol_server: RunningServer) -> None:
    with smol_server.http() as http:
        ids = http.post("/tokenize", json={"content": "Hello there"}).json()["tokens"]
        assert ids
        assert http.post("/detokenize", json={"tokens": ids}).json()["content"] == "Hello there"
        r = http.post(
            "/v1/completions",
            json={"model": MODEL, "prompt": ids, "max_tokens": 4, "temperature": 0},
        )
        assert r.status_code == 200
        assert r.json()["usage"]["prompt_tokens"] == len(ids)  # token ids are used as given
