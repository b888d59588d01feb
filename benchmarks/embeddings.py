"""Embedding throughput in the engine (no HTTP), and the memory the embedding context adds.

Two workloads: sentences (~20 tokens each, as a retrieval query or a log line) and document
chunks (~250 tokens each, as a retrieval index is built). Each is embedded as one request of all
its inputs (several inputs to a llama_decode) and one input per request, in alternating order,
for `--rounds` rounds; the medians are reported in inputs/s and tokens/s. RSS is read before the
embedding context is made, after it is made, and after the largest batch (llama.cpp grows its
output buffers, n_vocab logits per token of a batch, on first use).

    nice -n 15 .venv/bin/python benchmarks/embeddings.py --model smollm2-135m-instruct --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import psutil

from common import machine_line
from edgellm.config import EmbeddingConfig
from edgellm.engine.embedding import EmbeddingEngine
from edgellm.engine.llama import LlamaWeights
from edgellm.models import resolve_model

SENTENCES = [
    "Sensor {i} reports a temperature of {t} degrees in the cold store.",
    "Pump {i} stopped after a pressure drop of {t} kPa on line 3.",
    "How do I reset the controller of conveyor {i} after fault code {t}?",
    "The backup job on node {i} failed with exit code {t} at midnight.",
]
CHUNK = (
    "Maintenance log, unit {i}. The operator inspected the cooling circuit, found the filter "
    "clogged and replaced it; flow returned to {t} litres per minute. The vibration sensor on "
    "the main bearing read slightly above its usual band during start-up and settled after "
    "five minutes. The firmware of the controller was updated to the current release, and the "
    "alarm thresholds for temperature and pressure were checked against the plant's limits. "
)


def texts(kind: str, n: int) -> list[str]:
    if kind == "sentences":
        return [SENTENCES[i % len(SENTENCES)].format(i=i, t=40 + i) for i in range(n)]
    return [(CHUNK * 3).format(i=i, t=100 + i) for i in range(n)]


def timed(engine: EmbeddingEngine, inputs: Sequence[Sequence[int]], per_request: int) -> float:
    started = time.perf_counter()
    for i in range(0, len(inputs), per_request):
        engine.run(inputs[i : i + per_request])
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-batch", type=int, default=128)
    ap.add_argument("--sentences", type=int, default=64)
    ap.add_argument("--chunks", type=int, default=16)
    args = ap.parse_args()

    proc = psutil.Process()
    weights = LlamaWeights(resolve_model(args.model).path)
    rss0 = proc.memory_info().rss
    engine = EmbeddingEngine(
        args.model,
        weights,
        EmbeddingConfig(n_batch=args.n_batch, n_threads=args.threads),
    )
    rss1 = proc.memory_info().rss
    workloads = {
        kind: engine.prepare(texts(kind, n))[0]
        for kind, n in (("sentences", args.sentences), ("chunks", args.chunks))
    }
    for inputs in workloads.values():  # warm-up; grows llama.cpp's buffers to their size
        engine.run(inputs)
    rss2 = proc.memory_info().rss
    print(machine_line())
    print(
        f"{args.model}: n_embd {engine.n_embd}, window {engine.n_ctx}, n_batch {args.n_batch}, "
        f"threads {args.threads}, pooling {engine.info.pooling}"
    )
    print(
        f"RSS added by the embedding context: {(rss1 - rss0) / 2**20:.1f} MiB when made, "
        f"{(rss2 - rss0) / 2**20:.1f} MiB after the workloads"
    )
    print("| inputs | tokens each (mean) | batched: inputs/s | tokens/s | one per request: "
          "inputs/s | tokens/s |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- |")
    for kind, inputs in workloads.items():
        n_tokens = sum(map(len, inputs))
        together: list[float] = []
        alone: list[float] = []
        for r in range(args.rounds):
            order = (len(inputs), 1) if r % 2 == 0 else (1, len(inputs))
            for per_request in order:
                s = timed(engine, inputs, per_request)
                (together if per_request > 1 else alone).append(s)
        t, a = statistics.median(together), statistics.median(alone)
        print(
            f"| {len(inputs)} {kind} | {n_tokens / len(inputs):.0f} | {len(inputs) / t:.1f} | "
            f"{n_tokens / t:.0f} | {len(inputs) / a:.1f} | {n_tokens / a:.0f} |"
        )
    engine.close()
    weights.close()


if __name__ == "__main__":
    main()
