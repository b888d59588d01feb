"""Accuracy against the fraction of requests that reach the larger tier, per routing strategy.

The testbed's evals (`edgellm.evals`, the same code as `edgellm eval`) score each item of ARC-Easy
and BoolQ with both bundled models (SmolLM2-135M = small tier, Gemma-3-270M = large tier) through
`/v1/loglikelihood`; per-item JSONL goes to --out (resumable). Items are split by index: even
items train, odd items test. On the test split, for target escalation rates 10 %..90 %
(thresholds calibrated on the training split, as RouteLLM does), we report the accuracy and the
realised escalation rate of:

- cascade / max-prob: escalate when the small model's answer probability (softmax over the
  choices' log-likelihoods) is low;
- cascade / logistic: a logistic regression over the confidence features (log-prob of the answer
  normalised over choices, per-token log-prob of the answer, entropy over choices, answer length)
  trained on the training split's outcomes (`LogisticScorer`, what `router train --kind cascade`
  writes);
- learned: the prompt classifier of the `learned` policy (hashed n-grams + length) trained on
  the training split's prompts (label: the small model suffices); with --embed-model M also
  "learned + M embeddings" (the same classifier with the prompt's embedding by the GGUF model M,
  `router train --embed-model`; embeddings are cached in --out);
- random routing (expected value), always-small, always-large, and the oracle (escalate exactly
  the items the small model gets wrong and the large one right) as an upper bound.

    .venv/bin/python benchmarks/cascade_quality.py [--limit 300] [--tasks arc-easy boolq]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import uvicorn
from numpy.typing import NDArray

from edgellm.api.app import create_app
from edgellm.config import EngineConfig, ModelConfig
from edgellm.engine.pool import EnginePool
from edgellm.evals.runner import ITEMS_FILE, run_eval
from edgellm.evals.scorers import make_scorer
from edgellm.evals.tasks import get_task
from edgellm.gateway.confidence import FEATURES, Confidence
from edgellm.gateway.embeddings import PromptEmbedder
from edgellm.gateway.training import (
    PromptClassifier,
    calibrate,
    eval_confidence,
    fit_cascade_scorer,
)

SMALL, LARGE = "smollm2-135m-instruct", "gemma3-270m"
RATES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Item:
    id: str
    prompt: str
    small_correct: bool
    large_correct: bool
    conf: Confidence


def start_server(threads: int) -> tuple[str, uvicorn.Server, threading.Thread]:
    engine = EngineConfig(n_ctx=2048, n_threads=threads)
    pool = EnginePool([ModelConfig(name=n, source=n, engine=engine) for n in (SMALL, LARGE)])
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(pool), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    pool.wait_loaded(timeout=300)
    return f"http://127.0.0.1:{port}", server, thread


def items_dir(out: Path, evals_dir: Path | None, task_name: str, model: str) -> Path:
    """Where a model's per-item outcomes for a task live (and resume from)."""
    if evals_dir is not None:  # the layout `edgellm eval --out DIR/TASK-MODEL` of docs/accuracy.md
        return evals_dir / f"{task_name}-{model}"
    return out / task_name / model


def evaluate(
    url: str, task_name: str, limit: int | None, out: Path, evals_dir: Path | None
) -> dict[str, list[dict[str, Any]]]:
    task = get_task(task_name)
    records: dict[str, list[dict[str, Any]]] = {}
    with httpx.Client(base_url=url, timeout=600) as client:
        for model in (SMALL, LARGE):
            out_dir = items_dir(out, evals_dir, task_name, model)
            t0 = time.perf_counter()
            summary = run_eval(
                task, make_scorer("loglikelihood", client, model), model=model,
                out_dir=out_dir, limit=limit,
            )  # fmt: skip
            print(
                f"{task_name} {model}: acc {summary.accuracy.accuracy:.3f} "
                f"(n={summary.accuracy.n}, {time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
            lines = (out_dir / ITEMS_FILE).read_text().splitlines()
            records[model] = [json.loads(x) for x in lines if x.strip()]
    return records


def join(task_name: str, records: dict[str, list[dict[str, Any]]]) -> list[Item]:
    prompts = {it.id: it.requests[0][0] for it in get_task(task_name).load() if it.requests}
    large = {r["item_id"]: r for r in records[LARGE]}
    items = []
    for r in records[SMALL]:
        other = large.get(r["item_id"])
        if other is None:
            continue
        items.append(
            Item(r["item_id"], prompts.get(r["item_id"], ""), r["correct"], other["correct"],
                 eval_confidence(r))
        )  # fmt: skip
    items.sort(key=lambda it: int(it.id.rsplit("-", 1)[1]))
    return items


def accuracy(test: list[Item], escalate: np.ndarray) -> float:
    right = [
        it.large_correct if e else it.small_correct for it, e in zip(test, escalate, strict=True)
    ]
    return float(np.mean(right))


def curve(
    train_scores: np.ndarray, test_scores: np.ndarray, test: list[Item]
) -> list[tuple[float, float]]:
    """(realised escalation rate, accuracy) on test; thresholds calibrated on train."""
    points = []
    for rate in RATES:
        t = calibrate(train_scores, rate)
        esc = test_scores < t
        points.append((float(esc.mean()), accuracy(test, esc)))
    return points


class CachedEmbedder(PromptEmbedder):
    """Each prompt embedded once per run, and kept on disk between runs."""

    def __init__(self, model: str, n_ctx: int, threads: int, cache: Path) -> None:
        super().__init__(model, n_ctx=n_ctx, threads=threads)
        self.cache_path = cache
        self.cache: dict[str, list[float]] = {}
        if cache.exists():
            self.cache = json.loads(cache.read_text())

    def embed(self, texts: Sequence[str]) -> NDArray[np.float64]:
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        for i in range(0, len(missing), 32):
            part = missing[i : i + 32]
            for text, row in zip(part, super().embed(part), strict=True):
                self.cache[text] = [round(float(v), 7) for v in row]
        if missing:
            self.cache_path.write_text(json.dumps(self.cache))
        return np.array([self.cache[t] for t in texts], dtype=np.float64).reshape(-1, self.dim)


def strategies(
    items: list[Item], embedder: PromptEmbedder | None = None
) -> dict[str, list[tuple[float, float]]]:
    train, test = items[0::2], items[1::2]
    out: dict[str, list[tuple[float, float]]] = {}
    acc_s = float(np.mean([it.small_correct for it in test]))
    acc_l = float(np.mean([it.large_correct for it in test]))
    out["always-small"] = [(0.0, acc_s)]
    out["always-large"] = [(1.0, acc_l)]
    out["random"] = [(r, (1 - r) * acc_s + r * acc_l) for r in RATES]

    def maxprob(xs: list[Item]) -> np.ndarray:
        return np.array([it.conf.mean_logprob for it in xs])

    out["cascade max-prob"] = curve(maxprob(train), maxprob(test), test)
    scorer = fit_cascade_scorer(
        [dict(zip(FEATURES, it.conf.vector(), strict=True)) for it in train],
        [it.small_correct for it in train],
    )

    def logistic(xs: list[Item]) -> np.ndarray:
        return np.array([scorer.score(it.conf) for it in xs])

    out["cascade logistic"] = curve(logistic(train), logistic(test), test)
    ok = [it.small_correct or not it.large_correct for it in train]
    if len(set(ok)) == 2:
        clf = PromptClassifier.fit([it.prompt for it in train], ok, escalation_rate=0.5)
        out["learned"] = curve(
            clf.p_small_ok_many([it.prompt for it in train]),
            clf.p_small_ok_many([it.prompt for it in test]),
            test,
        )
        if embedder is not None:
            clf = PromptClassifier.fit([it.prompt for it in train], ok, 0.5, embedder)
            out[f"learned + {embedder.model} embeddings"] = curve(
                clf.p_small_ok_many([it.prompt for it in train]),
                clf.p_small_ok_many([it.prompt for it in test]),
                test,
            )
    oracle = np.array([(not it.small_correct) and it.large_correct for it in test])
    out["oracle"] = [(float(oracle.mean()), accuracy(test, oracle))]
    return out


def area(points: list[tuple[float, float]]) -> float:
    """Mean accuracy over the calibrated rates (the curve's average height)."""
    return float(np.mean([a for _, a in points]))


def write_report(results: dict[str, dict[str, list[tuple[float, float]]]], n: dict[str, int],
                 docs: Path, command: str) -> None:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), squeeze=False)
    lines = [
        "# Cascade quality: accuracy against escalation to the larger tier",
        "",
        f"Generated by `{command}` "
        f"(small tier {SMALL}, large tier {GEMMA_NAME}). Even items train, odd items test; "
        "thresholds are calibrated on the training split for the target rate, the table shows "
        "the test split (realised escalation rate, accuracy).",
        "",
    ]
    for ax, (task, res) in zip(axes[0], results.items(), strict=True):
        lines += [f"## {task} (test items: {n[task]})", "",
                  "| strategy | " + " | ".join(f"target {r:.0%}" for r in (0.2, 0.5, 0.8))
                  + " | mean acc over 10-90 % |",
                  "| --- | --- | --- | --- | --- |"]  # fmt: skip
        for name, pts in res.items():
            xs, ys = zip(*sorted(pts), strict=True)
            style = "o" if len(pts) == 1 else "-o"
            ax.plot(xs, ys, style, label=name, markersize=4)
            if len(pts) == len(RATES):
                cells = [pts[RATES.index(r)] for r in (0.2, 0.5, 0.8)]
                row = " | ".join(f"{e:.0%} → {a:.3f}" for e, a in cells)
                lines.append(f"| {name} | {row} | {area(pts):.3f} |")
            else:
                e, a = pts[0]
                lines.append(f"| {name} | {e:.0%} → {a:.3f} | | | |")
        lines.append("")
        ax.set_title(f"{task}")
        ax.set_xlabel("fraction of requests sent to the larger tier")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(docs / "cascade_quality.png", dpi=110)
    lines += ["![accuracy against escalation rate](cascade_quality.png)", ""]
    (docs / "cascade_quality.md").write_text("\n".join(lines))
    print("\n".join(lines))


GEMMA_NAME = LARGE


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=["arc-easy", "boolq"])
    ap.add_argument("--limit", type=int, default=300, help="items per task (first N; 0 = all)")
    ap.add_argument(
        "--task-limit",
        action="append",
        default=[],
        metavar="TASK=N",
        help="a different --limit for one task (repeatable)",
    )
    ap.add_argument(
        "--evals-dir",
        type=Path,
        help="reuse (and extend) `edgellm eval` outputs in DIR/TASK-MODEL, e.g. runs/accuracy",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--embed-model",
        help="also train the learned router with this model's "
        "prompt embeddings (e.g. smollm2-135m-instruct)",
    )
    ap.add_argument("--embed-ctx", type=int, default=128, help="tokens of a prompt it reads")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "cascade_quality")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs")
    args = ap.parse_args()
    url, server, thread = start_server(args.threads)
    results: dict[str, dict[str, list[tuple[float, float]]]] = {}
    n: dict[str, int] = {}
    try:
        for task in args.tasks:
            limits = dict(x.split("=", 1) for x in args.task_limit)
            limit = int(limits.get(task, args.limit)) or None
            records = evaluate(url, task, limit, args.out, args.evals_dir)
            items = join(task, records)
            embedder = None
            if args.embed_model:
                args.out.mkdir(parents=True, exist_ok=True)
                cache = args.out / f"embeddings-{task}-{args.embed_model}-{args.embed_ctx}.json"
                embedder = CachedEmbedder(args.embed_model, args.embed_ctx, args.threads, cache)
            results[task] = strategies(items, embedder)
            n[task] = len(items[1::2])
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    command = " ".join([".venv/bin/python", "benchmarks/cascade_quality.py", *sys.argv[1:]])
    write_report(results, n, args.docs, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
