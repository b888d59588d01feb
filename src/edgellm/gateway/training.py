"""Training from eval outcomes: the `learned` router's classifier and the cascade's logistic scorer.

Outcomes are JSON lines. For the router: `{"prompt": str, "small_correct": bool,
"large_correct": bool}` (the small model suffices when it is right, or when the large one is
wrong too). For the cascade scorer: `{"features": {"mean_logprob": .., "min_logprob": ..,
"mean_entropy": .., "n_tokens": ..}, "correct": bool}` for the small model's answers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgellm.errors import EdgeLLMError
from edgellm.gateway.confidence import FEATURES, Confidence, LogisticScorer
from edgellm.gateway.embeddings import PromptEmbedder

N_FEATURES = 2**14


# scikit-learn and scipy are imported where used: a gateway without a learned policy never pays
# their start-up time and memory (seconds and ~100 MB on a Pi).


def _vectorizer() -> Any:
    from sklearn.feature_extraction.text import HashingVectorizer  # type: ignore[import-untyped]

    return HashingVectorizer(
        n_features=N_FEATURES, ngram_range=(1, 2), alternate_sign=False, norm="l2"
    )


def _features(texts: Sequence[str], embedder: PromptEmbedder | None = None) -> Any:
    from scipy import sparse  # type: ignore[import-untyped]

    words = _vectorizer().transform(texts)
    lengths = np.array([[math.log1p(len(t))] for t in texts])
    parts = [words, sparse.csr_matrix(lengths)]
    if embedder is not None:
        parts.append(sparse.csr_matrix(embedder.embed(texts)))
    return sparse.hstack(parts).tocsr()


class PromptClassifier:
    """P(the small model suffices | prompt), from hashed word n-grams and the prompt's length,
    and optionally a local GGUF model's embedding of the prompt."""

    def __init__(
        self,
        coef: NDArray[np.float64],
        intercept: float,
        threshold: float,
        embedder: PromptEmbedder | None = None,
    ) -> None:
        self.coef = coef
        self.intercept = intercept
        self.threshold = threshold
        self.embedder = embedder

    @classmethod
    def fit(
        cls,
        prompts: Sequence[str],
        small_ok: Sequence[bool],
        escalation_rate: float,
        embedder: PromptEmbedder | None = None,
    ) -> PromptClassifier:
        from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

        if len(set(small_ok)) < 2:
            raise EdgeLLMError("training needs both outcomes (small right and small wrong)")
        x = _features(prompts, embedder)
        clf = LogisticRegression(C=1.0, max_iter=1000, class_weight="balanced")
        clf.fit(x, np.array(small_ok, dtype=int))
        model = cls(clf.coef_[0].astype(np.float64), float(clf.intercept_[0]), 0.5, embedder)
        model.threshold = calibrate(model._p(x), escalation_rate)
        return model

    def _p(self, x: Any) -> NDArray[np.float64]:
        z = x @ self.coef + self.intercept
        return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -50, 50))), dtype=np.float64)

    def p_small_ok_many(self, prompts: Sequence[str]) -> NDArray[np.float64]:
        return self._p(_features(prompts, self.embedder))

    def p_small_ok(self, prompt: str) -> float:
        return float(self.p_small_ok_many([prompt])[0])

    def save(self, path: Path) -> None:
        nz = np.flatnonzero(self.coef)
        body: dict[str, Any] = {
            "kind": "hashed-ngrams-logreg",
            "n_features": int(self.coef.size),
            "index": nz.tolist(),
            "coef": [round(float(v), 6) for v in self.coef[nz]],
            "intercept": self.intercept,
            "threshold": self.threshold,
        }
        if self.embedder is not None:
            body["kind"] = "hashed-ngrams-embeddings-logreg"
            body["embedder"] = self.embedder.spec()
        path.write_text(json.dumps(body))

    @classmethod
    def load(cls, path: Path, *, threads: int = 2) -> PromptClassifier:
        """Read a saved model; one with embeddings loads its GGUF embedding model too."""
        try:
            data = json.loads(Path(path).read_text())
            coef = np.zeros(int(data["n_features"]))
            coef[np.array(data["index"], dtype=int)] = data["coef"]
            spec = data.get("embedder")
            embedder = None
            if spec is not None:
                expected = N_FEATURES + 1 + int(spec["dim"])
                if coef.size != expected:
                    raise ValueError(f"{coef.size} weights for {expected} features")
                embedder = PromptEmbedder(str(spec["model"]), n_ctx=int(spec["n_ctx"]),
                                          threads=threads)  # fmt: skip
                if embedder.dim != int(spec["dim"]):
                    embedder.close()  # its llama.cpp context would outlive the failed load
                    raise ValueError(
                        f"{spec['model']} embeds in {embedder.dim} dimensions, the router was "
                        f"trained on {spec['dim']}"
                    )
            return cls(coef, float(data["intercept"]), float(data["threshold"]), embedder)
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise EdgeLLMError(f"cannot load router model {path}: {exc}") from exc


def calibrate(p_small_ok: Iterable[float], escalation_rate: float) -> float:
    """The threshold that sends `escalation_rate` of these prompts to the larger model (those with
    the lowest P(small suffices)), as RouteLLM calibrates on a sample of queries."""
    values = np.sort(np.asarray(list(p_small_ok), dtype=np.float64))
    if values.size == 0:
        return 0.5
    k = round(escalation_rate * values.size)
    if k <= 0:
        return float(values[0])
    if k >= values.size:
        return float(values[-1]) + 1e-9
    return float((values[k - 1] + values[k]) / 2)


def fit_cascade_scorer(
    rows: Sequence[dict[str, float]], correct: Sequence[bool], features: Sequence[str] = FEATURES
) -> LogisticScorer:
    from sklearn.linear_model import LogisticRegression

    if len(set(correct)) < 2:
        raise EdgeLLMError("training needs both right and wrong answers")
    x = np.array([[float(r[f]) for f in features] for r in rows])
    clf = LogisticRegression(max_iter=1000)
    clf.fit(x, np.array(correct, dtype=int))
    return LogisticScorer(
        list(features), [float(c) for c in clf.coef_[0]], float(clf.intercept_[0])
    )


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise EdgeLLMError(f"cannot read {path}: {exc}") from exc
    rows = []
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as exc:
                raise EdgeLLMError(f"{path}:{n}: not JSON: {exc}") from exc
    return rows


# -- outcomes from the testbed's evals (`edgellm eval`, per-item JSONL) -------------------------


def eval_confidence(record: dict[str, Any]) -> Confidence:
    """A multiple-choice answer's confidence, in the cascade's feature names: the log of the
    chosen choice's probability normalised over the choices, its per-token log-prob, the entropy
    over the choices, and its length in tokens."""
    lps = np.array(record["choice_logprobs"], dtype=float)
    probs = np.exp(lps - lps.max())
    probs /= probs.sum()
    pred = int(record["pred"])
    n_tok = max(1, int(record["choice_tokens"][pred]))
    return Confidence(
        mean_logprob=float(math.log(max(float(probs[pred]), 1e-12))),
        min_logprob=float(lps[pred] / n_tok),
        mean_entropy=float(-(probs * np.log(np.clip(probs, 1e-12, 1))).sum()),
        n_tokens=n_tok,
    )


def outcomes_from_evals(
    small: Path, large: Path, prompts: dict[str, str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Join two models' eval records by `item_id`: rows for the learned router ({prompt,
    small_correct, large_correct}) and for the cascade scorer ({features, correct})."""
    large_by_id = {r["item_id"]: r for r in read_jsonl(large)}
    router_rows, cascade_rows = [], []
    for r in read_jsonl(small):
        conf = eval_confidence(r)
        cascade_rows.append({"features": dict(zip(FEATURES, conf.vector(), strict=True)),
                             "correct": bool(r["correct"])})  # fmt: skip
        other = large_by_id.get(r["item_id"])
        if other is not None and r["item_id"] in prompts:
            router_rows.append(
                {"prompt": prompts[r["item_id"]], "small_correct": bool(r["correct"]),
                 "large_correct": bool(other["correct"])}
            )  # fmt: skip
    return router_rows, cascade_rows
