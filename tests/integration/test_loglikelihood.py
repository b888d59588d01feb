"""The log-likelihood API against a direct computation from full logits (llama_cpp.Llama)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from llama_cpp import Llama

from edgellm.config import EngineConfig
from edgellm.engine.engine import Engine
from tests.integration.servers import RunningServer

pytestmark = pytest.mark.integration

PAIRS = [
    ("The capital of France is", " Paris"),
    ("1, 2, 3, 4,", " 5, 6, 7"),
    ("The cat sat on the", " mat and purred loudly."),
    ("Q: Is the sky blue?\nA:", " Yes"),
]


def log_softmax(row: np.ndarray) -> np.ndarray:
    row = row.astype(np.float64)
    peak = row.max()
    return row - (peak + np.log(np.exp(row - peak).sum()))


# Flash attention changes the numbers noticeably on CPU (F16 accumulation), so the reference is
# configured like the engine, once with and once without it.
@pytest.fixture(
    scope="module",
    params=[
        ("smollm2-135m-instruct", False),
        ("smollm2-135m-instruct", True),
        ("gemma3-270m", False),
    ],
    ids=lambda p: f"{p[0]}-fa{int(p[1])}",
)
def engine_and_reference(
    request: pytest.FixtureRequest, model_paths: dict[str, Path]
) -> Iterator[tuple[Engine, Llama]]:
    name, flash_attn = request.param
    path = model_paths[name]
    engine = Engine.load(name, path, EngineConfig(n_ctx=512, n_threads=2, flash_attn=flash_attn))
    reference = Llama(
        model_path=str(path),
        n_ctx=512,
        n_threads=2,
        logits_all=True,
        flash_attn=flash_attn,
        verbose=False,
    )
    yield engine, reference
    engine.close()
    reference.close()


def test_matches_full_logits(engine_and_reference: tuple[Engine, Llama]) -> None:
    engine, reference = engine_and_reference
    results = asyncio.run(engine.loglikelihood(PAIRS))
    for (context, continuation), got in zip(PAIRS, results, strict=True):
        req = engine.loglikelihood_request(context, continuation)
        tokens = req.context_tokens + req.continuation_tokens
        start = len(req.context_tokens)
        # The engine evaluates the context (minus its last token) and the scored positions in
        # separate llama_decode calls; matrix kernels round differently by batch shape (about
        # 0.05 nats on Gemma's 12 tokens), so the reference splits its evaluation the same way.
        reference.reset()
        reference.eval(tokens[: start - 1])
        reference.eval(tokens[start - 1 :])
        logits = np.array(reference.scores[: len(tokens)])
        expected = [log_softmax(logits[i - 1])[tokens[i]] for i in range(start, len(tokens))]
        greedy = all(int(np.argmax(logits[i - 1])) == tokens[i] for i in range(start, len(tokens)))
        assert got.n_tokens == len(req.continuation_tokens) > 0
        assert got.logprob == pytest.approx(sum(expected), abs=1e-3)
        assert np.allclose(got.token_logprobs, expected, atol=1e-3)
        assert got.is_greedy == greedy


def test_repeated_scoring_is_stable_with_prefix_reuse(
    engine_and_reference: tuple[Engine, Llama],
) -> None:
    engine, _ = engine_and_reference
    shared = "Question: which is heavier, a kilogram of iron or a kilogram of feathers? Answer:"
    pairs = [(shared, " iron"), (shared, " feathers"), (shared, " iron")]
    first, second, third = asyncio.run(engine.loglikelihood(pairs))
    assert first.logprob == pytest.approx(third.logprob, abs=1e-4)
    assert first.logprob != pytest.approx(second.logprob, abs=1e-4)


def test_http_endpoint_agrees_with_greedy_generation(smol_server: RunningServer) -> None:
    prompt = "The three primary colours are"
    with smol_server.http() as http:
        gen = http.post(
            "/v1/completions",
            json={
                "model": "smollm2-135m-instruct",
                "prompt": prompt,
                "max_tokens": 6,
                "temperature": 0,
                "logprobs": 1,
                "ignore_eos": True,
            },
        ).json()
        text = gen["choices"][0]["text"]
        r = http.post(
            "/v1/loglikelihood",
            json={
                "model": "smollm2-135m-instruct",
                "items": [{"context": prompt, "continuation": text}],
            },
        )
        assert r.status_code == 200
        item = r.json()["data"][0]
        assert item["is_greedy"] is True
        generated_lps = gen["choices"][0]["logprobs"]["token_logprobs"]
        if item["n_tokens"] == len(generated_lps):  # same tokenization both ways
            assert item["logprob"] == pytest.approx(sum(generated_lps), abs=1e-3)
        bad = http.post(
            "/v1/loglikelihood",
            json={
                "model": "smollm2-135m-instruct",
                "items": [{"context": "x", "continuation": ""}],
            },
        )
        assert bad.status_code == 422
