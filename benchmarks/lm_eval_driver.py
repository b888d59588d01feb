"""lm-evaluation-harness's `local-completions` model against an EdgeLLM node, on a task defined in
a local YAML, with the model's own tokenizer. Run by `benchmarks/lm_eval_agreement.py` with the
Python of the separate venv that holds `lm_eval` (it imports nothing of EdgeLLM's).

The tokenizer: lm-eval needs one for every log-likelihood task (it sends token ids and splits the
context from the continuation by count). Its `huggingface` backend loads a transformers tokenizer;
transformers builds one from a GGUF only through its GGUF reader, which imports torch. Its `remote`
backend asks vLLM's `/tokenizer_info`, which a node does not have. So the tokenizer here is the
node's own (llama.cpp's, the very one that tokenizes the model's prompts), through its llama-server
style `/tokenize` and `/detokenize`, in the `remote` backend's place: lm-eval calls `encode`,
`batch_decode` and the BOS/EOS of it, nothing else, for these tasks. `add_special` (a BOS for
Gemma) is lm-eval's `add_bos_token=True`, and what `/v1/loglikelihood` does.

    python lm_eval_driver.py --root http://127.0.0.1:PORT --model NAME --tasks DIR --task NAME
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import requests
from lm_eval import simple_evaluate
from lm_eval.api.registry import get_model
from lm_eval.tasks import TaskManager


class NodeTokenizer:
    """The node's `/tokenize` and `/detokenize`, shaped as lm-eval's remote tokenizer."""

    def __init__(self, root: str, model: str, *, add_special: bool = True) -> None:
        self.root = root
        self.model = model
        self.add_special = add_special
        self.session = requests.Session()
        bos = self._tokenize("", add_special=True)
        self.bos_token_id: int | None = bos[0] if bos else None
        self.eos_token_id: int | None = None  # only generation tasks stop on it
        self.eos_token: str | None = None

    def _tokenize(self, text: str, *, add_special: bool) -> list[int]:
        body = {"content": text, "add_special": add_special, "model": self.model}
        r = self.session.post(f"{self.root}/tokenize", json=body, timeout=60)
        r.raise_for_status()
        return [int(t) for t in r.json()["tokens"]]

    def encode(self, text: str) -> list[int]:
        return self._tokenize(text, add_special=self.add_special)

    def decode(self, tokens: list[int]) -> str:
        body = {"tokens": tokens, "model": self.model}
        r = self.session.post(f"{self.root}/detokenize", json=body, timeout=60)
        r.raise_for_status()
        return str(r.json()["content"])

    def batch_decode(self, batch: list[list[int]]) -> list[str]:
        return [self.decode(tokens) for tokens in batch]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True, help="the node's root URL")
    ap.add_argument("--model", required=True)
    ap.add_argument("--tasks", required=True, help="the folder of the task's YAML")
    ap.add_argument("--task", required=True)
    ap.add_argument("--max-length", type=int, default=2048)
    args = ap.parse_args()

    lm = get_model("local-completions")(
        model=args.model,
        base_url=f"{args.root}/v1/completions",
        tokenizer_backend="none",  # nothing to load; the node's tokenizer is put in below
        max_length=args.max_length,
        num_concurrent=1,
        max_retries=1,
        timeout=600,
    )
    lm.tokenizer = NodeTokenizer(args.root, args.model)
    lm.tokenizer_backend = "remote"
    lm.tokenized_requests = True  # token ids, as lm-eval sends them with any tokenizer

    out = simple_evaluate(
        model=lm,
        tasks=[args.task],
        task_manager=TaskManager(include_path=args.tasks),
        num_fewshot=0,
        log_samples=True,
        bootstrap_iters=0,
    )
    assert out is not None
    metrics = out["results"][args.task]
    samples: list[dict[str, Any]] = out["samples"][args.task]
    items = [
        {"doc_id": s["doc_id"], "loglikelihoods": [float(r[0]) for r in s["filtered_resps"]]}
        for s in sorted(samples, key=lambda s: s["doc_id"])
    ]
    json.dump({"acc": metrics["acc,none"], "n": len(items), "items": items}, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
