"""The embedding engine on the real SmolLM2 weights, without HTTP: its own mean pooling against
llama.cpp's, inputs split across decodes, cancellation and the queue bound."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgellm.config import EmbeddingConfig
from edgellm.engine.embedding import EmbeddingEngine, EmbeddingSettings, LlamaEmbedder
from edgellm.engine.llama import LlamaWeights
from edgellm.errors import OverloadedError

pytestmark = pytest.mark.integration

TEXTS = [
    "The cat sat on the mat.",
    "Pump 2 stopped after a pressure drop on line 3.",
    "hi",
    "Maintenance log: the filter was replaced and the flow returned to normal. " * 6,
]


@pytest.fixture(scope="module")
def weights(model_paths: dict[str, Path]) -> Iterator[LlamaWeights]:
    w = LlamaWeights(model_paths["smollm2-135m-instruct"])
    yield w
    w.close()


def _tokens(weights: LlamaWeights) -> list[list[int]]:
    return [weights.tokenize(t, add_special=True, parse_special=False) for t in TEXTS]


def test_own_mean_pooling_agrees_with_llama_cpps(weights: LlamaWeights) -> None:
    tokens = _tokens(weights)
    assert max(map(len, tokens)) > 16  # the long input spans decodes below
    own = LlamaEmbedder(weights, EmbeddingSettings(n_ctx=256, n_batch=16))
    pooled = LlamaEmbedder(weights, EmbeddingSettings(n_ctx=256, pooling="mean"))
    last = LlamaEmbedder(weights, EmbeddingSettings(n_ctx=256, pooling="last"))
    try:
        assert own.own_pooling and not pooled.own_pooling
        a, b, c = own.embed(tokens), pooled.embed(tokens), last.embed(tokens)
    finally:
        for e in (own, pooled, last):
            e.close()
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert (np.einsum("ij,ij->i", a, b) > 0.999).all()
    # the negative: another pooling gives other vectors (but for a one-token input, whose
    # last token is its mean)
    several = np.array([len(t) > 1 for t in tokens])
    assert several.sum() >= 3
    assert (np.einsum("ij,ij->i", a, c)[several] < 0.99).all()


def test_an_input_split_across_decodes_is_split_alike_alone_or_batched(
    weights: LlamaWeights,
) -> None:
    tokens = _tokens(weights)
    e = LlamaEmbedder(weights, EmbeddingSettings(n_ctx=256, n_batch=16, n_seq_max=4))
    try:
        batched = e.embed(tokens + tokens)
        alone = np.stack([e.embed([t])[0] for t in tokens])
    finally:
        e.close()
    # decodes of at most 16 tokens: the kernels round alike, so equal to the bit
    assert np.array_equal(batched[: len(tokens)], alone)
    assert np.array_equal(batched[len(tokens) :], alone)


def test_cancelled_work_stops_before_its_first_decode(weights: LlamaWeights) -> None:
    e = LlamaEmbedder(weights, EmbeddingSettings(n_ctx=256))
    try:
        stopped = e.embed(_tokens(weights), cancelled=lambda: True)
        done = e.embed(_tokens(weights), cancelled=lambda: False)
    finally:
        e.close()
    assert not stopped.any()
    assert np.allclose(np.linalg.norm(done, axis=1), 1.0, atol=1e-5)


def test_a_full_queue_is_refused_with_retry_after(weights: LlamaWeights) -> None:
    engine = EmbeddingEngine("smol", weights, EmbeddingConfig(max_queue=0))

    async def two_at_once() -> list[object]:
        return await asyncio.gather(
            engine.embed(TEXTS * 8), engine.embed(["second"]), return_exceptions=True
        )

    try:
        first, second = asyncio.run(two_at_once())
        alone = asyncio.run(engine.embed(["second"]))  # the queue empty again: served
    finally:
        engine.close()
    assert not isinstance(first, BaseException)
    assert isinstance(second, OverloadedError) and second.retry_after >= 1
    assert alone.vectors.shape == (1, 576)
