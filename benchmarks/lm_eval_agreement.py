"""lm-evaluation-harness against an EdgeLLM node, next to `edgellm eval`, on the same items with
the same scoring: ARC (Easy by default), `acc` (the choice with the highest summed log-prob of
" <choice>" after "<query>\\nAnswer:") on both sides.

- lm-eval (PyPI `lm_eval`, its own venv made here with uv, never the project's dependencies)
  runs its `local-completions` model against the node: every choice is one `/v1/completions`
  request with `echo: true, logprobs: 1, max_tokens: 1` and a token-id prompt, and lm-eval sums
  the echoed prompt's log-probs after the context. The task is a local YAML over the bundled
  `src/edgellm/data/arc` file (no hub download); the tokenizer is the node's own
  (`benchmarks/lm_eval_driver.py` says why and how).
- `edgellm eval` scores the same items through the same node's `/v1/loglikelihood`.

Prints both accuracies, n, the difference, how many predictions agree and how far the
per-choice log-likelihoods are apart. One node, `--parallel 1`, serves both, one after the other.

    .venv/bin/python benchmarks/lm_eval_agreement.py --model smollm2-135m-instruct [--limit N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from edgellm.bench.server import LocalServer
from edgellm.data import read_jsonl
from edgellm.evals.runner import ITEMS_FILE, load_records, run_eval
from edgellm.evals.scorers import LoglikelihoodScorer
from edgellm.evals.tasks import get_task

LM_EVAL = "lm_eval[api]==0.4.13"  # [api]: what its API models import (aiohttp, tenacity)
DRIVER = Path(__file__).with_name("lm_eval_driver.py")
FILES = {"arc-easy": "arc_easy_test.jsonl", "arc-challenge": "arc_challenge_test.jsonl"}
TASK_YAML = """\
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{query}}}}\\nAnswer:"
doc_to_target: "{{{{gold}}}}"
doc_to_choice: "{{{{choices}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def uv() -> str:
    found = shutil.which("uv")
    bootstrap = Path.home() / ".cache/edgellm/bootstrap/bin/uv"  # what the Makefile installs
    if found:
        return found
    if bootstrap.exists():
        return str(bootstrap)
    raise SystemExit("uv not found: run `make setup` first (it installs uv)")


def lm_eval_python(venv: Path) -> Path:
    """The Python of a venv holding lm_eval, made (with uv, from PyPI) if it is not there."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import lm_eval, aiohttp, tenacity, requests"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    if not python.exists():
        subprocess.run([uv(), "venv", "-q", "--python", "3.11", str(venv)], check=True)
    subprocess.run([uv(), "pip", "install", "-q", "--python", str(python), LM_EVAL], check=True)
    return python


def write_task(folder: Path, task: str, limit: int | None) -> str:
    """The task's YAML and its first `limit` items, copied from the bundled file."""
    rows = list(read_jsonl("arc", FILES[task]))[:limit]
    data = folder / "test.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    name = "edgellm_" + task.replace("-", "_")
    (folder / f"{name}.yaml").write_text(TASK_YAML.format(name=name, data=data))
    return name


def run_lm_eval(python: Path, root: str, model: str, folder: Path, name: str) -> dict[str, Any]:
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cmd = [str(python), str(DRIVER), "--root", root, "--model", model]
    cmd += ["--tasks", str(folder), "--task", name]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"lm-eval failed ({done.returncode})")
    return dict(json.loads(done.stdout))


def run_edgellm(root: str, model: str, task: str, limit: int | None, out: Path) -> list[Any]:
    with httpx.Client(base_url=root, timeout=600.0) as client:
        run_eval(
            get_task(task),
            LoglikelihoodScorer(client, model),
            model=model,
            out_dir=out,
            limit=limit,
        )
    return load_records(out / ITEMS_FILE)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--task", default="arc-easy", choices=sorted(FILES))
    ap.add_argument("--limit", type=int, default=None, help="the first N items (default: all)")
    ap.add_argument("--threads", type=int, default=2, help="the node's threads")
    ap.add_argument("--venv", type=Path, default=Path(tempfile.gettempdir()) / "edgellm-lm-eval")
    ap.add_argument("--out", type=Path, default=None, help="write the figures here as JSON")
    args = ap.parse_args()

    python = lm_eval_python(args.venv)
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalServer(args.model, threads=args.threads) as node,
    ):
        folder = Path(tmp)
        name = write_task(folder, args.task, args.limit)
        t0 = time.perf_counter()
        ours = run_edgellm(node.url, args.model, args.task, args.limit, folder / "edgellm")
        t1 = time.perf_counter()
        theirs = run_lm_eval(python, node.url, args.model, folder, name)
        t2 = time.perf_counter()

    n = len(ours)
    if theirs["n"] != n:
        raise SystemExit(f"lm-eval scored {theirs['n']} items, edgellm eval {n}")
    acc_ours = sum(1 for r in ours if r["correct"]) / n
    acc_theirs = float(theirs["acc"])
    same = gaps = 0
    deltas: list[float] = []
    for mine, other in zip(ours, theirs["items"], strict=True):
        lls = other["loglikelihoods"]
        pred = max(range(len(lls)), key=lambda i: lls[i])
        same += pred == mine["pred"]
        deltas += [abs(a - b) for a, b in zip(mine["choice_logprobs"], lls, strict=True)]
        gaps += len(lls)
    figures = {
        "model": args.model,
        "task": args.task,
        "n": n,
        "edgellm_eval_acc": acc_ours,
        "lm_eval_acc": acc_theirs,
        "difference_points": 100 * (acc_theirs - acc_ours),
        "same_prediction": same,
        "choice_loglik_abs_diff_median": statistics.median(deltas),
        "choice_loglik_abs_diff_max": max(deltas),
        "choices": gaps,
        "edgellm_eval_s": round(t1 - t0, 1),
        "lm_eval_s": round(t2 - t1, 1),
        "lm_eval": LM_EVAL,
    }
    print(
        f"{args.task} {args.model}, n={n}: edgellm eval acc {acc_ours:.2%}, "
        f"lm-eval local-completions acc {acc_theirs:.2%}, "
        f"difference {figures['difference_points']:+.2f} points; "
        f"same prediction {same}/{n}; per-choice |Δ log-likelihood| median "
        f"{figures['choice_loglik_abs_diff_median']:.2g}, max "
        f"{figures['choice_loglik_abs_diff_max']:.2g} nats"
    )
    if args.out is not None:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
