"""The long fuzz run: the suite `make test` runs (tests/integration/test_fuzz.py: schemathesis
against a real `edgellm node` and a real `edgellm serve` gateway), with many more random cases
and a seed of your choice.

Reported per server: cases sent, how they were answered (statuses), the share of the cases to
chat, text completions and scoring that got a 200, whether the process was alive and healthy
at the end (a crash), and the failures schemathesis found (5xx, undocumented statuses or
content types, answers off the schema, a strict endpoint accepting a body off its schema).

    nice -n 10 .venv/bin/python benchmarks/fuzz.py --examples 3000 --seed 1
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=3000, help="random cases per operation")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write the figures here as JSON")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "fuzz.jsonl"
        env = os.environ | {
            "EDGELLM_FUZZ_EXAMPLES": str(args.examples),
            "EDGELLM_FUZZ_SEED": str(args.seed),
            "EDGELLM_FUZZ_REPORT": str(report),
        }
        cmd = [sys.executable, "-m", "pytest", "tests/integration/test_fuzz.py", "-q", "-rf"]
        cmd += ["-p", "no:cacheprovider", "-o", "timeout=0"]
        started = time.monotonic()
        run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = time.monotonic() - started
        servers = [json.loads(line) for line in report.read_text().splitlines()]

    summary_lines = [ln for ln in run.stdout.splitlines() if re.match(r"(SUB)?FAILED ", ln)]
    figures = {
        "examples_per_operation": args.examples,
        "seed": args.seed,
        "seconds": round(seconds, 1),
        "pytest_exit_code": run.returncode,
        "failures": len(summary_lines),
        "failed": summary_lines,
        "servers": servers,
    }
    print(f"seed {args.seed}, {args.examples} random cases per operation, {seconds:.0f} s")
    for s in servers:
        share = s["generation_200_fraction"]
        print(
            f"{s['server']:8} {s['cases']:6} cases, {s['generation_cases']} to generation/scoring"
            f" ({share:.0%} answered 200), alive: {s['alive']}, /health: {s['health']},"
            f" statuses: {s['statuses']}"
        )
    print(f"failures: {len(summary_lines)}")
    for line in summary_lines:
        print(f"  {line}")
    if run.returncode not in (0, 1):
        print(run.stdout[-3000:], run.stderr[-3000:], sep="\n")
    if args.out is not None:
        args.out.write_text(json.dumps(figures, indent=2))
    return 0 if run.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
