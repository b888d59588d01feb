"""Prompt embeddings from the bundled SmolLM2 as features of the `learned` router."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgellm.errors import EdgeLLMError
from edgellm.gateway.embeddings import PromptEmbedder
from edgellm.gateway.training import PromptClassifier
from tests.integration.gateway.harness import remote, start_fake, start_gateway

pytestmark = pytest.mark.integration

COUNTRIES = ["France", "Spain", "Italy", "Germany", "Kenya", "Chile", "Canada", "Egypt", "India",
             "Norway", "Brazil", "Ghana", "Nepal", "Cuba", "Iran", "Chad"]  # fmt: skip
EASY = [f"What is the capital of {c}?" for c in COUNTRIES] + [
    f"Which language do people speak in {c}?" for c in COUNTRIES
]
THEOREMS = ["the square root of two is irrational", "there are infinitely many primes",
            "every bounded monotone sequence converges", "the harmonic series diverges",
            "a continuous function on a closed interval attains its maximum",
            "the sum of the angles of a triangle is 180 degrees", "e is irrational",
            "the determinant of a product is the product of determinants"]  # fmt: skip
HARD = [
    f"{lead} {t}."
    for lead in (
        "Prove that",
        "Give a rigorous proof that",
        "Show formally why",
        "Derive step by step that",
    )
    for t in THEOREMS
]
# paraphrases that share almost no words with the training prompts
UNSEEN_EASY = ["Name the main city where Japan's government sits.",
               "Tell me the currency used by Mexico.", "Where is Peru located?"]  # fmt: skip
UNSEEN_HARD = ["Demonstrate that no largest natural number exists.",
               "Establish that pi cannot be written as a fraction.",
               "Justify why a compact set in R^n is closed and bounded."]  # fmt: skip
LABELS = [True] * len(EASY) + [False] * len(HARD)


@pytest.fixture(scope="module")
def embedder() -> Iterator[PromptEmbedder]:
    e = PromptEmbedder("smollm2-135m-instruct", n_ctx=64)
    yield e
    e.close()


def test_embeddings_are_unit_rows_independent_of_batching(embedder: PromptEmbedder) -> None:
    texts = ["What is the capital of France?", "Prove that e is irrational.", "hi"]
    rows = embedder.embed(texts)
    assert rows.shape == (3, embedder.dim) == (3, 576)
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0)
    alone = embedder.embed([texts[1]])[0]
    assert np.allclose(alone, rows[1], atol=1e-5)
    # a prompt longer than n_ctx keeps its last n_ctx tokens: what comes before them does not
    # matter, the question at the end does
    question = "What is the capital of France?"
    story = "Once upon a time there was a king. " * 100
    long, longer = embedder.embed([story + question, "A short preface. " * 50 + story + question])
    assert np.allclose(long, longer, atol=1e-5)
    without = embedder.embed([story + "And they lived happily ever after."])[0]
    assert float(long @ without) < 0.999


def test_embeddings_generalise_to_paraphrases_better_than_ngrams(
    embedder: PromptEmbedder,
) -> None:
    def margin(clf: PromptClassifier) -> float:
        return float(
            clf.p_small_ok_many(UNSEEN_EASY).min() - clf.p_small_ok_many(UNSEEN_HARD).max()
        )

    ngrams = PromptClassifier.fit(EASY + HARD, LABELS, 0.5)
    both = PromptClassifier.fit(EASY + HARD, LABELS, 0.5, embedder)
    assert margin(both) > 0.1  # every unseen easy prompt above every unseen hard one
    assert margin(both) > margin(ngrams)


def test_saved_router_reloads_its_embedding_model(tmp_path: Path, embedder: PromptEmbedder) -> None:
    clf = PromptClassifier.fit(EASY + HARD, LABELS, 0.5, embedder)
    clf.save(tmp_path / "router.json")
    saved = json.loads((tmp_path / "router.json").read_text())
    assert saved["kind"] == "hashed-ngrams-embeddings-logreg"
    assert saved["embedder"] == {"model": "smollm2-135m-instruct", "n_ctx": 64, "dim": 576}
    again = PromptClassifier.load(tmp_path / "router.json")
    assert again.embedder is not None
    probe = UNSEEN_EASY + UNSEEN_HARD
    assert np.allclose(again.p_small_ok_many(probe), clf.p_small_ok_many(probe), atol=1e-5)
    again.embedder.close()
    saved["embedder"]["dim"] = 640
    (tmp_path / "bad.json").write_text(json.dumps(saved))
    with pytest.raises(EdgeLLMError, match="features"):
        PromptClassifier.load(tmp_path / "bad.json")


def test_learned_policy_with_embeddings_routes_and_reports_its_time(
    tmp_path: Path, embedder: PromptEmbedder
) -> None:
    PromptClassifier.fit(EASY + HARD, LABELS, 0.5, embedder).save(tmp_path / "router.json")
    small, large = start_fake(name="small"), start_fake(name="large")
    policy = {"name": "learned", "kind": "learned", "models": ["small", "large"],
              "path": str(tmp_path / "router.json"), "embedding_threads": 1}  # fmt: skip
    config = {
        "models": [],
        "remote_models": [
            remote("small", [small.base_url], tier="edge-small"),
            remote("large", [large.base_url], tier="edge-large"),
        ],
        "policies": [policy],
    }
    gw = start_gateway(config)
    try:
        with gw.http() as http:
            for prompt, expected in ((UNSEEN_EASY[2], "small"), (UNSEEN_HARD[0], "large")):
                body = {"model": "learned", "messages": [{"role": "user", "content": prompt}]}
                r = http.post("/v1/chat/completions", json=body)
                assert r.status_code == 200, r.text
                route = r.json()["route"]
                assert route["model"] == expected, route
                assert route["signals"]["embedding_ms"] > 0
    finally:
        gw.stop()
        small.served.stop()
        large.served.stop()
