"""A conversation's next turn on a node that is prefilling someone else's long prompt.

A chat client sends its next turn as soon as its answer ends, and a node that was prefilling
another request's long prompt beside that answer turns to it in whole prefill-only steps just
then: the turn waits for the step under way. This measures that wait on one
`edgellm node --parallel 4` (SmolLM2, `--threads 1` by default), each trial:

1. client A streams a first turn (a ~100-token prompt, `max_tokens` 32);
2. 0.3 s later client B sends a long prompt (`--long` random words: 1,000 are 1,015 SmolLM2
   tokens; `max_tokens` 4), which is still being prefilled when A's answer ends;
3. A sends its next turn at once (its prompt, its answer, ~30 new tokens): its TTFT is the
   figure, next to B's TTFT (what the long prompt's prefill took, shorter steps included) and
   to the same next turn on the otherwise idle node (its own prefill only).

With `--baseline-src DIR` (the src/ of another build, e.g. `git worktree add /tmp/base HEAD`),
a node of that build runs beside this one and the trials alternate between them; the medians
are printed with their ratio (this build / baseline).

    .venv/bin/python benchmarks/turn_join.py [--trials 8] [--threads 1] [--baseline-src DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import StreamResult, machine_line, start_edgellm_node, stop, stream

MODEL = "smollm2-135m-instruct"
WORDS = [
    "river",
    "stone",
    "garden",
    "window",
    "paper",
    "music",
    "winter",
    "market",
    "bridge",
    "candle",
    "forest",
    "silver",
    "harbor",
    "engine",
    "letter",
    "mirror",
    "orange",
    "planet",
    "rabbit",
    "signal",
    "summer",
    "thunder",
    "valley",
    "yellow",
]


@dataclass
class Trial:
    next_turn_s: float  # A's next turn, B prefilling beside it
    long_s: float  # B's time to first token
    alone_s: float  # A's same next turn on the idle node
    next_prefilled: int  # prompt tokens A's next turn prefilled (its cache held the rest)


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def completion(http: httpx.Client, prompt: str, max_tokens: int) -> StreamResult:
    body = {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    return stream(http, "/v1/completions", body)


def trial(url: str, rng: random.Random, long_words: int) -> Trial:
    tag = f"Trial {rng.randrange(10**9)}."  # a fresh prefix: nothing cached from earlier trials
    new = f" {words(rng, 28)}"
    long_prompt = f"{tag} Long: {words(rng, long_words)}"
    with httpx.Client(base_url=url, timeout=600) as a, httpx.Client(base_url=url, timeout=600) as b:
        long_result: list[StreamResult] = []

        def send_long() -> None:
            time.sleep(0.3)
            long_result.append(completion(b, long_prompt, 4))

        other = threading.Thread(target=send_long)
        first2 = f"{tag} again {words(rng, 90)}"
        other.start()
        answer = completion(a, first2, 32)
        nxt = completion(a, first2 + answer.text + new, 8)
        other.join()
        # a next turn of the same shape on the idle node: its own prefill only
        first3 = f"{tag} alone {words(rng, 90)}"
        answer3 = completion(a, first3, 32)
        alone = completion(a, first3 + answer3.text + new, 8)
    timings = nxt.timings or {}
    return Trial(
        nxt.ttft,
        long_result[0].ttft,
        alone.ttft,
        int(timings.get("prompt_n", -1)),
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--long", type=int, default=1000, help="words in B's long prompt")
    p.add_argument("--port", type=int, default=18290)
    p.add_argument("--baseline-src", type=Path, help="src/ of a build to compare with")
    args = p.parse_args()
    print(machine_line())
    print(f"{MODEL}, node --threads {args.threads} --parallel 4; {args.trials} trials per build")
    builds = {"this build": os.environ.copy()}
    if args.baseline_src:
        builds["baseline"] = os.environ | {"PYTHONPATH": str(args.baseline_src.resolve())}
    nodes = {}
    try:
        for i, (name, env) in enumerate(builds.items()):
            port = args.port + i
            proc = start_edgellm_node(
                MODEL, threads=args.threads, port=port, parallel=4, ctx=4096, env=env
            )
            nodes[name] = (proc, f"http://127.0.0.1:{port}")
        results: dict[str, list[Trial]] = {name: [] for name in builds}
        rng = random.Random(7)
        for t in range(args.trials):
            order = list(builds) if t % 2 == 0 else list(reversed(builds))
            for name in order:
                results[name].append(trial(nodes[name][1], rng, args.long))
    finally:
        for proc, _ in nodes.values():
            stop(proc)
    print("| build | next turn TTFT s, B prefilling | same turn alone s | B's TTFT s | "
          "next turn prefilled tokens |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: |")
    med: dict[str, tuple[float, float, float]] = {}
    for name, trials in results.items():
        m = (
            statistics.median(x.next_turn_s for x in trials),
            statistics.median(x.alone_s for x in trials),
            statistics.median(x.long_s for x in trials),
        )
        med[name] = m
        prefilled = statistics.median(x.next_prefilled for x in trials)
        print(f"| {name} | {m[0]:.2f} | {m[1]:.2f} | {m[2]:.2f} | {prefilled:.0f} |")
        print("  next turn, each trial: " + " ".join(f"{x.next_turn_s:.2f}" for x in trials))
    if "baseline" in med:
        mine, base = med["this build"], med["baseline"]
        print(
            f"\nthis build / baseline: next turn beside the prefill {mine[0] / base[0]:.2f}, "
            f"alone {mine[1] / base[1]:.2f}, B's TTFT {mine[2] / base[2]:.2f}"
        )


if __name__ == "__main__":
    main()
