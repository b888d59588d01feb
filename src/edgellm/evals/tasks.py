"""Evaluation tasks: which (context, continuation) pairs an item needs and how they decide.

A task is registered by name and offers `load()` (items) and `score(item, scored, tokenizer)`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from edgellm.data import read_jsonl
from edgellm.engine.jobs import common_prefix_len
from edgellm.evals.scorers import Scored, Tokenizer


@dataclass(frozen=True)
class EvalItem:
    id: str
    gold: int
    choices: tuple[str, ...]
    requests: tuple[tuple[str, str], ...] = ()
    """(context, continuation) pairs, one per choice, in choice order (empty when they depend on
    the model's tokenizer: then `Task.requests` builds them)."""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    pred: int
    correct: bool
    choice_logprobs: list[float]
    """Summed log-prob of each choice's scored tokens."""
    choice_scores: list[float]
    """What decided (mean per token for llama.cpp WinoGrande, else the summed log-prob)."""
    choice_tokens: list[int]
    extra: dict[str, Any] = field(default_factory=dict)


class Task(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def needs_tokenizer(self) -> bool: ...

    def load(self) -> list[EvalItem]: ...

    def requests(self, item: EvalItem, tokenizer: Tokenizer | None) -> list[tuple[str, str]]: ...

    def score(
        self, item: EvalItem, scored: Sequence[Scored], tokenizer: Tokenizer | None
    ) -> Outcome: ...


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda i: values[i])


# --- WinoGrande ----------------------------------------------------------------------------


def split_blank(sentence: str) -> tuple[str, str]:
    where = sentence.index("_")
    return sentence[:where], sentence[where + 1 :]


def llamacpp_span(
    seqs: tuple[list[int], list[int]], bases: tuple[int, int], min_trailing: int = 3
) -> list[tuple[int, int]]:
    """Token index ranges [start, end) that llama.cpp's `--winogrande` averages, per choice.

    `seqs` are the token ids of first+option+second, `bases` the lengths of first+option.
    When both sentences go on for more than `min_trailing` tokens after their common prefix, only
    the part after the option is scored ("partial scoring"); otherwise everything after the
    common prefix. The last token (usually the full stop) is left out when more than one remains.
    """
    common = common_prefix_len(*seqs)
    skip_choice = all(len(s) - common > min_trailing for s in seqs)
    spans = []
    for seq, base in zip(seqs, bases, strict=True):
        start = base if skip_choice else common
        last = 1 if len(seq) - start > 1 else 0
        spans.append((start, len(seq) - last))
    return spans


@dataclass
class WinoGrande:
    """WinoGrande 1.1 dev (1,267 items).

    `llamacpp` (default): exactly what `llama-perplexity --winogrande` computes: the mean
    log-prob of the tokens after the blank's option (see `llamacpp_span`), needs `/tokenize`.
    `lm-eval`: lm-eval's `winogrande` task: log P(" " + rest | sentence up to the blank + option).
    """

    method: str = "llamacpp"
    name: str = "winogrande"
    _tokens: dict[str, tuple[list[int], list[int], int, int]] = field(default_factory=dict)

    @property
    def needs_tokenizer(self) -> bool:
        return self.method == "llamacpp"

    def load(self) -> list[EvalItem]:
        items = []
        for row in read_jsonl("winogrande", "dev.jsonl"):
            first, second = split_blank(row["sentence"])
            options = (row["option1"], row["option2"])
            requests: tuple[tuple[str, str], ...] = ()
            if self.method != "llamacpp":
                requests = tuple((first + o, " " + second.strip()) for o in options)
            items.append(
                EvalItem(
                    id=row["qID"],
                    gold=int(row["answer"]) - 1,
                    choices=options,
                    requests=requests,
                    extra={"first": first, "second": second},
                )
            )
        return items

    def requests(self, item: EvalItem, tokenizer: Tokenizer | None) -> list[tuple[str, str]]:
        """llama.cpp method: each whole sentence is scored from its start (after the BOS, or
        after its first token when the model has none), with the same (or no) BOS as llama.cpp.

        Every sentence is evaluated whole and afresh, as llama-perplexity does, rather than
        after a shared context: llama.cpp's CPU kernels round differently with the shape of
        the batch (a 4-row GEMM vs a one-row GEMV on repacked Q4_K weights), by up to 0.3
        nats per token on Gemma-3, so the score of an item would otherwise depend on what
        the server evaluated before it (docs/accuracy.md).
        """
        if self.method != "llamacpp":
            return list(item.requests)
        if tokenizer is None:
            raise ValueError("llama.cpp WinoGrande scoring needs the server's tokenizer")
        first, second = item.extra["first"], item.extra["second"]
        texts = [first + o + second for o in item.choices]
        seq0, seq1 = tokenizer.tokenize(texts[0]), tokenizer.tokenize(texts[1])
        base0 = len(tokenizer.tokenize(first + item.choices[0]))
        base1 = len(tokenizer.tokenize(first + item.choices[1]))
        self._tokens[item.id] = (seq0, seq1, base0, base1)
        n_special = tokenizer.n_special
        # The first token needs a context to be scored; llama.cpp never scores it anyway.
        context = "" if n_special else tokenizer.detokenize(seq0[:1])
        if not all(text.startswith(context) for text in texts):
            context = ""  # a tokenizer that does not round-trip: score from the start
        return [(context, text[len(context) :]) for text in texts]

    def score(
        self, item: EvalItem, scored: Sequence[Scored], tokenizer: Tokenizer | None
    ) -> Outcome:
        if self.method != "llamacpp":
            lps = [s.logprob for s in scored]
            pred = _argmax(lps)
            return Outcome(
                pred, pred == item.gold, lps, lps, [len(s.token_logprobs) for s in scored]
            )
        seq0, seq1, base0, base1 = self._tokens.pop(item.id)
        seqs, bases = (seq0, seq1), (base0, base1)
        spans = llamacpp_span(seqs, bases)
        sums, means, counts = [], [], []
        for seq, (start, end), result in zip(seqs, spans, scored, strict=True):
            # token_logprobs covers the sequence after the shared context
            offset = len(seq) - len(result.token_logprobs)
            lps = [result.token_logprobs[k - offset] for k in range(max(start, offset), end)]
            sums.append(sum(lps))
            means.append(sum(lps) / len(lps) if lps else float("-inf"))
            counts.append(len(lps))
        # llama.cpp: `score_1st > score_2nd ? 1 : 2`, so a tie goes to option 2
        pred = 0 if means[0] > means[1] else 1
        return Outcome(pred, pred == item.gold, sums, means, counts)


# --- multiple choice from the llm-foundry ICL files (ARC, BoolQ) ----------------------------


@dataclass
class MultipleChoice:
    """Context "<query>\\nAnswer:", continuation " <choice>", as lm-eval's ARC and BoolQ.

    `correct` is by summed log-prob (lm-eval `acc`); `correct_norm` by log-prob per byte of the
    choice (lm-eval `acc_norm`), kept in each record's `extra`.
    """

    name: str
    path: tuple[str, str]
    needs_tokenizer: bool = False

    def load(self) -> list[EvalItem]:
        items = []
        for i, row in enumerate(read_jsonl(*self.path)):
            context = row["query"] + "\nAnswer:"
            choices = tuple(str(c) for c in row["choices"])
            items.append(
                EvalItem(
                    id=f"{self.name}-{i}",
                    gold=int(row["gold"]),
                    choices=choices,
                    requests=tuple((context, " " + c) for c in choices),
                )
            )
        return items

    def requests(self, item: EvalItem, tokenizer: Tokenizer | None) -> list[tuple[str, str]]:
        return list(item.requests)

    def score(
        self, item: EvalItem, scored: Sequence[Scored], tokenizer: Tokenizer | None
    ) -> Outcome:
        lps = [s.logprob for s in scored]
        pred = _argmax(lps)
        norm = [
            lp / max(1, len((" " + c).encode())) for lp, c in zip(lps, item.choices, strict=True)
        ]
        pred_norm = _argmax(norm)
        return Outcome(
            pred,
            pred == item.gold,
            lps,
            lps,
            [len(s.token_logprobs) for s in scored],
            extra={"pred_norm": pred_norm, "correct_norm": pred_norm == item.gold},
        )


TASKS: dict[str, Callable[[], Task]] = {
    "winogrande": WinoGrande,
    "winogrande-lmeval": lambda: WinoGrande(method="lm-eval", name="winogrande-lmeval"),
    "arc-easy": lambda: MultipleChoice("arc-easy", ("arc", "arc_easy_test.jsonl")),
    "arc-challenge": lambda: MultipleChoice("arc-challenge", ("arc", "arc_challenge_test.jsonl")),
    "boolq": lambda: MultipleChoice("boolq", ("boolq", "boolq_validation.jsonl")),
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise KeyError(f"unknown task '{name}'; choose from {', '.join(TASKS)}")
    return TASKS[name]()
