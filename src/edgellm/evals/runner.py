"""Run a task against a scorer: per-item JSONL (resumable), then a summary with 95 % CIs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from edgellm.evals.scorers import Scorer, Tokenizer
from edgellm.evals.stats import Accuracy, accuracy
from edgellm.evals.tasks import EvalItem, Task

ITEMS_FILE = "items.jsonl"
SUMMARY_FILE = "summary.json"


class EvalSummary(BaseModel):
    model: str
    task: str
    accuracy: Accuracy
    accuracy_norm: Accuracy | None = None
    n_items_total: int
    limit: int | None
    elapsed_s: float
    items_file: str


def done_ids(path: Path) -> set[str]:
    return {str(r["item_id"]) for r in load_records(path) if "item_id" in r}


def record(model: str, task: Task, item: EvalItem, outcome: Any) -> dict[str, Any]:
    return {
        "model": model,
        "task": task.name,
        "item_id": item.id,
        "gold": item.gold,
        "pred": outcome.pred,
        "correct": outcome.correct,
        "choice_logprobs": outcome.choice_logprobs,
        "choice_scores": outcome.choice_scores,
        "choice_tokens": outcome.choice_tokens,
        **outcome.extra,
    }


def run_eval(
    task: Task,
    scorer: Scorer,
    *,
    model: str,
    out_dir: Path,
    tokenizer: Tokenizer | None = None,
    limit: int | None = None,
    batch_items: int = 8,
    on_progress: Callable[[int, int, int], None] | None = None,
) -> EvalSummary:
    """Score the first `limit` items (all if None); items already in `out_dir` are kept."""
    out_dir.mkdir(parents=True, exist_ok=True)
    items_path = out_dir / ITEMS_FILE
    items = task.load()
    n_total = len(items)
    if limit is not None:
        items = items[:limit]
    finished = done_ids(items_path)
    todo = [item for item in items if item.id not in finished]
    started = time.perf_counter()
    n_done = len(items) - len(todo)
    keep = {i.id for i in items}
    n_correct = (
        sum(1 for r in load_records(items_path) if r["item_id"] in keep and r["correct"])
        if finished
        else 0
    )
    with items_path.open("a", encoding="utf-8") as out:
        for batch in _chunks(todo, batch_items):
            per_item = [task.requests(item, tokenizer) for item in batch]
            scored = scorer.score([pair for pairs in per_item for pair in pairs])
            at = 0
            for item, pairs in zip(batch, per_item, strict=True):
                part = scored[at : at + len(pairs)]
                at += len(pairs)
                outcome = task.score(item, part, tokenizer)
                out.write(json.dumps(record(model, task, item, outcome)) + "\n")
                n_correct += int(outcome.correct)
            out.flush()
            n_done += len(batch)
            if on_progress:
                on_progress(n_done, len(items), n_correct)
    return summarize(
        items_path,
        model=model,
        task=task.name,
        n_total=n_total,
        limit=limit,
        elapsed_s=time.perf_counter() - started,
        keep=keep,
    )


def load_records(path: Path) -> list[dict[str, Any]]:
    """The items scored so far (none if `path` is not there); a line cut short by Ctrl-C is
    skipped."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def summarize(
    items_path: Path,
    *,
    model: str,
    task: str,
    n_total: int,
    limit: int | None,
    elapsed_s: float,
    keep: set[str] | None = None,
) -> EvalSummary:
    records = [r for r in load_records(items_path) if keep is None or r["item_id"] in keep]
    acc = accuracy(sum(1 for r in records if r["correct"]), len(records))
    norm = None
    if records and "correct_norm" in records[0]:
        norm = accuracy(sum(1 for r in records if r["correct_norm"]), len(records))
    summary = EvalSummary(
        model=model,
        task=task,
        accuracy=acc,
        accuracy_norm=norm,
        n_items_total=n_total,
        limit=limit,
        elapsed_s=elapsed_s,
        items_file=items_path.name,
    )
    (items_path.parent / SUMMARY_FILE).write_text(summary.model_dump_json(indent=2) + "\n")
    return summary


def _chunks(items: list[EvalItem], size: int) -> Iterable[list[EvalItem]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
