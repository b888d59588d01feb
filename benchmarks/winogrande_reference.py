"""WinoGrande dev: EdgeLLM's `edgellm eval winogrande` next to upstream `llama-perplexity
--winogrande` on the same GGUF file, same items, same machine.

Writes the bundled `dev.jsonl` in the CSV layout llama.cpp reads (index,sentence,option1,
option2,answer; the sentence quoted only when it holds a comma, as data/winogrande/SOURCE.md
describes), runs llama-perplexity on it, then our harness (a local node started by
`edgellm eval`), and prints both accuracies with their error bars and the per-item agreement.

    .venv/bin/python benchmarks/winogrande_reference.py --model smollm2-135m-instruct [--limit N]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from edgellm.data import read_jsonl
from edgellm.models import resolve_model
from edgellm.reference import require_tool

FINAL = re.compile(r"Final Winogrande score\((\d+) tasks\): ([\d.]+) \+/- ([\d.]+)")
ROW = re.compile(r"^(\d+)\t[\d.]+\t\s*(-?[\d.]+|-?inf|nan)\s+(-?[\d.]+|-?inf|nan)\s+(\d)\s+(\d)$")


def write_llamacpp_csv(path: Path, limit: int | None) -> int:
    lines = []
    for i, row in enumerate(read_jsonl("winogrande", "dev.jsonl")):
        if limit is not None and i >= limit:
            break
        sentence = row["sentence"]
        if "," in sentence:
            sentence = f'"{sentence}"'
        lines.append(f"{i},{sentence},{row['option1']},{row['option2']},{row['answer']}\n")
    path.write_text("".join(lines))
    return len(lines)


def run_reference(
    model_path: Path, csv: Path, threads: int, log: Path | None = None
) -> tuple[list[int], str]:
    tool = require_tool("llama-perplexity")
    out = subprocess.run(
        [
            str(tool),
            "-m",
            str(model_path),
            "--winogrande",
            "-f",
            str(csv),
            "-t",
            str(threads),
            "-c",
            "2048",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    text = out.stdout + out.stderr
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(text)
    preds = [int(m.group(4)) - 1 for line in text.splitlines() if (m := ROW.match(line.strip()))]
    final = FINAL.search(text)
    return preds, final.group(0) if final else "(fewer than 100 tasks: no final score)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/accuracy"))
    args = parser.parse_args()
    model_path = resolve_model(args.model).path
    out_dir = args.out / f"winogrande-{args.model}"
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "dev-llamacpp.csv"
        n = write_llamacpp_csv(csv, args.limit)
        ref_preds, ref_line = run_reference(
            model_path, csv, args.threads, out_dir / "llama-perplexity.log"
        )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "edgellm",
            "eval",
            "winogrande",
            "--model",
            args.model,
            "--threads",
            str(args.threads),
            "--out",
            str(out_dir),
        ]
        + (["--limit", str(args.limit)] if args.limit else []),
        check=True,
    )
    ours = [json.loads(x) for x in (out_dir / "items.jsonl").read_text().splitlines()][:n]
    same = ours[: len(ref_preds)]  # llama-perplexity's CSV reader drops the file's last row
    agree = sum(1 for r, p in zip(same, ref_preds, strict=False) if r["pred"] == p)
    same_acc = 100 * sum(r["correct"] for r in same) / max(1, len(same))
    summary = json.loads((out_dir / "summary.json").read_text())["accuracy"]
    print(f"items: {n}")
    print(f"llama-perplexity: {ref_line}")
    print(f"edgellm eval:     {100 * summary['accuracy']:.4f} +/- {100 * summary['stderr']:.4f}")
    print(f"edgellm eval on the {len(same)} items llama-perplexity scored: {same_acc:.4f}")
    print(f"same prediction on {agree}/{len(same)} items")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
