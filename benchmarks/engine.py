"""Engine speed over HTTP against upstream llama.cpp, same model, threads and machine, one run.

Prints, for each model: client-observed decode tok/s (128 generated tokens, streamed over HTTP
from our node server) and prefill tok/s (a 512-token prompt, measured as prompt tokens / TTFT),
next to upstream `llama-bench` tg128 and pp512 (built by `make reference`), and the ratio of the
medians. Target: ratio >= 0.85 for both. A shared 2-vCPU VM drifts by 10-20 % between runs, so
the two are measured in alternating rounds (llama-bench one repetition, then ours), and medians
are compared. Optionally (--with-llama-cpp-python) also the plain
`llama_cpp.Llama.create_completion` streaming loop, the straightforward path we replaced.

With --baseline-src DIR (the src/ of another build, e.g. `git worktree add /tmp/base <commit>`),
a node of that build is measured in the same rounds too, and this build's medians are printed
as a ratio of the baseline's (target >= 0.98: a refactor must not cost speed).

    .venv/bin/python benchmarks/engine.py [--models smollm2-135m-instruct gemma3-270m]
        [--threads 2] [--repetitions 3] [--with-llama-cpp-python] [--baseline-src DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from common import (
    StreamResult,
    machine_line,
    random_prompt,
    rounds,
    start_edgellm_node,
    stop,
    stream,
)
from edgellm.models import resolve_model
from edgellm.reference import require_tool

TARGET = 0.85
BASELINE_TARGET = 0.98
DECODE_TOKENS = 128
PREFILL_TOKENS = 512


@dataclass
class Figures:
    decode_tps: float
    prefill_tps: float


def llama_bench(model: Path, threads: int) -> Figures:
    """One llama-bench repetition of pp512 and tg128 (after its own warm-up)."""
    tool = require_tool("llama-bench")
    cmd = [
        str(tool), "-m", str(model), "-t", str(threads), "-p", str(PREFILL_TOKENS),
        "-n", str(DECODE_TOKENS), "-r", "1", "-o", "json",
    ]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    rows = json.loads(out)
    pp = next(r for r in rows if r["n_prompt"] == PREFILL_TOKENS and r["n_gen"] == 0)
    tg = next(r for r in rows if r["n_gen"] == DECODE_TOKENS and r["n_prompt"] == 0)
    return Figures(decode_tps=float(tg["avg_ts"]), prefill_tps=float(pp["avg_ts"]))


class OurServer:
    """Our node server in its own process, measured over HTTP like any client would."""

    def __init__(
        self,
        model: str,
        threads: int,
        port: int,
        env: dict[str, str] | None = None,
        parallel: int = 1,
    ) -> None:
        self.model = model
        self.proc = start_edgellm_node(
            model, threads=threads, port=port, env=env, parallel=parallel
        )
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300)
        self.vocab = int(self.http.get("/v1/models").json()["data"][0]["meta"]["n_vocab"])
        self.rng = random.Random(0)
        self._random_prompt(32, max_tokens=16)  # warm-up: page the weights in

    def _random_prompt(self, n: int, max_tokens: int) -> StreamResult:
        # A fresh random prompt each time, so no prefix-cache hit flatters prefill.
        body = {
            "model": self.model,
            "prompt": random_prompt(self.rng, self.vocab, n),
            "max_tokens": max_tokens,
            "temperature": 0,
            "ignore_eos": True,
        }
        return stream(self.http, "/v1/completions", body)

    def measure(self) -> Figures:
        ttft = self._random_prompt(PREFILL_TOKENS, 1).ttft
        arrivals = self._random_prompt(8, DECODE_TOKENS).arrivals
        # ignore_eos guarantees DECODE_TOKENS tokens; a chunk may carry several if we lag.
        decode = (DECODE_TOKENS - 1) / (arrivals[-1] - arrivals[0])
        return Figures(decode_tps=decode, prefill_tps=PREFILL_TOKENS / ttft)

    def close(self) -> None:
        self.http.close()
        stop(self.proc)


def llama_cpp_python_loop(path: Path, threads: int, repetitions: int) -> Figures:
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=2048, n_threads=threads, verbose=False)
    rng = random.Random(1)
    vocab = llm.n_vocab()
    decode, prefill = [], []
    for _ in range(repetitions):
        prompt = [rng.randrange(100, vocab) for _ in range(PREFILL_TOKENS)]
        llm.reset()
        started = time.perf_counter()
        next(iter(llm.create_completion(prompt, max_tokens=1, temperature=0, stream=True)))
        prefill.append(PREFILL_TOKENS / (time.perf_counter() - started))
        llm.reset()
        short = [rng.randrange(100, vocab) for _ in range(8)]
        arrivals = []
        for _ in llm.create_completion(
            short, max_tokens=DECODE_TOKENS, temperature=0, stream=True, logit_bias={}
        ):
            arrivals.append(time.perf_counter())
        decode.append((len(arrivals) - 1) / (arrivals[-1] - arrivals[0]))
    llm.close()
    return Figures(statistics.mean(decode), statistics.mean(prefill))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["smollm2-135m-instruct", "gemma3-270m"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repetitions", type=int, default=5, help="alternating rounds")
    parser.add_argument("--port", type=int, default=18180)
    parser.add_argument("--with-llama-cpp-python", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--baseline-src", type=Path, help="src/ of a build to compare with")
    parser.add_argument(
        "--parallel",
        type=int,
        default=1,
        help="the nodes' --parallel (one request at a time still: with free slots, a prompt "
        "is prefilled in shorter steps so that a joining request need not wait long)",
    )
    args = parser.parse_args()

    print(machine_line())
    print(f"threads: {args.threads}, repetitions: {args.repetitions}, --parallel {args.parallel}\n")
    results = []
    ok = True
    for name in args.models:
        path = resolve_model(name).path
        ours, ref, base = [], [], []
        server = OurServer(name, args.threads, args.port, parallel=args.parallel)
        baseline = None
        try:
            if args.baseline_src:
                env = os.environ | {"PYTHONPATH": str(args.baseline_src.resolve())}
                baseline = OurServer(
                    name, args.threads, args.port + 1, env=env, parallel=args.parallel
                )
            for _ in range(args.repetitions):
                ref.append(llama_bench(path, args.threads))
                ours.append(server.measure())
                if baseline is not None:
                    base.append(baseline.measure())
        finally:
            server.close()
            if baseline is not None:
                baseline.close()
        rows = [
            ("decode tok/s (tg128)", [f.decode_tps for f in ours], [f.decode_tps for f in ref]),
            ("prefill tok/s (pp512)", [f.prefill_tps for f in ours], [f.prefill_tps for f in ref]),
        ]
        plain = (
            llama_cpp_python_loop(path, args.threads, args.repetitions)
            if args.with_llama_cpp_python
            else None
        )
        print(f"== {name} ({path.name}), medians of {args.repetitions} alternating rounds")
        print(f"{'metric':24} {'edgellm/HTTP':>13} {'llama-bench':>12} {'ratio':>7}  target")
        figures: dict[str, dict[str, object]] = {}
        for label, mine, theirs in rows:
            ratio = statistics.median(mine) / statistics.median(theirs)
            ok = ok and ratio >= TARGET
            verdict = "ok" if ratio >= TARGET else "BELOW"
            print(
                f"{label:24} {statistics.median(mine):13.1f} {statistics.median(theirs):12.1f}"
                f" {ratio:7.2f}  >= {TARGET} {verdict}"
            )
            print(f"{'  rounds':24} {rounds(mine):>13} {rounds(theirs):>12}")
            figures[label] = {"edgellm": mine, "llama_bench": theirs, "ratio": ratio}
        if base:
            print(f"{'against --baseline-src':24} {'this build':>13} {'baseline':>12} {'ratio':>7}")
            for label, attr in (("decode tok/s", "decode_tps"), ("prefill tok/s", "prefill_tps")):
                mine_v = [getattr(f, attr) for f in ours]
                base_v = [getattr(f, attr) for f in base]
                ratio = statistics.median(mine_v) / statistics.median(base_v)
                ok = ok and ratio >= BASELINE_TARGET
                verdict = "ok" if ratio >= BASELINE_TARGET else "BELOW"
                print(
                    f"{label:24} {statistics.median(mine_v):13.1f} "
                    f"{statistics.median(base_v):12.1f} {ratio:7.2f}  >= {BASELINE_TARGET} "
                    f"{verdict}"
                )
                print(f"{'  rounds':24} {rounds(mine_v):>13} {rounds(base_v):>12}")
                figures[f"{label} vs baseline"] = {"edgellm": mine_v, "baseline": base_v}
        if plain:
            decode_ratio = plain.decode_tps / statistics.median(r.decode_tps for r in ref)
            prefill_ratio = plain.prefill_tps / statistics.median(r.prefill_tps for r in ref)
            print(
                "llama-cpp-python Llama.create_completion loop (in process): "
                f"decode {plain.decode_tps:.1f} tok/s ({decode_ratio:.2f}x), "
                f"prefill {plain.prefill_tps:.1f} tok/s ({prefill_ratio:.2f}x)"
            )
        print()
        results.append(
            {
                "model": name,
                "figures": figures,
                "llama_cpp_python_loop": plain.__dict__ if plain else None,
            }
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
