"""The cost of grammar-constrained sampling, per generated token, in the engine (no HTTP).

Each round generates the same answers (same prompts, seeds and temperature) with and without
a JSON-schema grammar, in alternating order, and compares the mean time per generated token
(decode step plus sampling; the prompt's prefill is left out). The ratio is taken within each
round and the median of the rounds is reported, with the share of tokens the grammar refused
(those cost a mask over the whole vocabulary and a second draw).

    .venv/bin/python benchmarks/grammar.py --model smollm2-135m-instruct --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import time

from pydantic import BaseModel

from common import machine_line
from edgellm.engine.llama import LlamaModel, LlamaSettings
from edgellm.engine.structured import schema_grammar
from edgellm.models import resolve_model


class Reading(BaseModel):
    sensor: str
    celsius: float
    ok: bool
    notes: list[str]


PROMPTS = [
    "Give one sensor reading as JSON.",
    "Report the temperature of the boiler room as JSON.",
    "Describe the state of the cold store sensor as JSON.",
]


def _prompt(model: LlamaModel, text: str) -> list[int]:
    if model.chat_template():
        text = f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"
        return model.tokenize(text, add_special=True, parse_special=True)
    return model.tokenize(text + "\n", add_special=True, parse_special=False)


def generate(
    model: LlamaModel, prompt: list[int], grammar: str | None, seed: int, max_tokens: int
) -> tuple[int, float, int]:
    """Generated tokens, seconds spent on them, tokens the grammar refused."""
    model.clear_cache()
    model.decode(prompt, 0)
    sampler = model.new_sampler(
        temperature=0.8, top_p=1.0, top_k=0, min_p=0.0, seed=seed, grammar=grammar
    )
    pos, n = len(prompt), 0
    started = time.perf_counter()
    for _ in range(max_tokens):
        token = sampler.sample(-1)
        n += 1
        if model.is_eog(token):
            break
        model.decode([token], pos)
        pos += 1
    seconds = time.perf_counter() - started
    masked = sampler.n_masked
    sampler.close()
    return n, seconds, masked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=96)
    args = parser.parse_args()

    model = LlamaModel(
        resolve_model(args.model).path, LlamaSettings(n_ctx=1024, n_threads=args.threads)
    )
    grammar = schema_grammar(Reading.model_json_schema(), param="response_format")
    prompts = [_prompt(model, p) for p in PROMPTS]
    ratios, free_ms, bound_ms, refused = [], [], [], []
    for r in range(args.rounds):
        order = [None, grammar] if r % 2 == 0 else [grammar, None]
        per: dict[bool, tuple[int, float]] = {}
        for g in order:
            tokens, seconds, masked = 0, 0.0, 0
            for i, prompt in enumerate(prompts):
                n, s, m = generate(model, prompt, g, seed=100 * r + i, max_tokens=args.max_tokens)
                tokens, seconds, masked = tokens + n, seconds + s, masked + m
            per[g is not None] = (tokens, seconds)
            if g is not None:
                refused.append(masked / tokens)
        free = per[False][1] / per[False][0] * 1e3
        bound = per[True][1] / per[True][0] * 1e3
        free_ms.append(free)
        bound_ms.append(bound)
        ratios.append(bound / free)
        print(
            f"round {r}: {free:.2f} ms/token free, {bound:.2f} with the grammar "
            f"(x{bound / free:.2f}; {refused[-1]:.0%} of its tokens refused by the grammar)"
        )
    print(machine_line())
    print(
        f"{args.model}: median {statistics.median(free_ms):.2f} ms/token free, "
        f"{statistics.median(bound_ms):.2f} with the grammar: x{statistics.median(ratios):.2f} "
        f"(rounds: {', '.join(f'{x:.2f}' for x in ratios)}); "
        f"tokens refused by the grammar: {statistics.median(refused):.0%}"
    )
    model.close()


if __name__ == "__main__":
    main()
