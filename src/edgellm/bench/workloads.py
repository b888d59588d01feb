"""Workloads: what the load generator sends, as sessions of one or more user turns.

Registered by name: `oasst` (the paper's multi-turn conversations), `synthetic` (exact prompt
lengths in tokens, fixed output lengths) and `file` (a user's JSONL). A multi-turn session is
replayed turn by turn; the runner puts the model's own answer (or the dataset's) in the history.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from edgellm.data import read_jsonl


class WorkloadError(Exception):
    pass


@dataclass
class Session:
    id: str
    user_turns: list[str] = field(default_factory=list)
    dataset_answers: list[str | None] = field(default_factory=list)
    system: str | None = None
    history: list[dict[str, str]] = field(default_factory=list)
    """Messages before the first replayed turn (a `file` item with `messages`)."""
    prompt: str | list[int] | None = None
    """A raw completion prompt instead of chat turns (synthetic)."""
    max_tokens: int | None = None
    ignore_eos: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_requests(self) -> int:
        return 1 if self.prompt is not None else len(self.user_turns)


class WorkloadOptions(BaseModel):
    conversations: int = Field(50, ge=1, description="oasst: threads to replay")
    history: Literal["model", "dataset"] = "model"
    prompt_tokens: list[int] = Field(default_factory=lambda: [128], description="synthetic")
    output_tokens: int = Field(128, ge=1, description="synthetic: tokens generated (ignore EOS)")
    requests_per_length: int = Field(5, ge=1, description="synthetic: prompts per length")
    path: Path | None = Field(None, description="file: JSONL of prompts/conversations")
    seed: int = 0
    salt: str | None = Field(
        None,
        description="synthetic: mixed with the seed into the choice of text; each run gets its "
        "own (kept in config.json for --resume), since a server keeps its caches between runs "
        "and the same prompts sent again would be prefix-cache hits",
    )


class Tokenizer(Protocol):
    def tokenize(self, text: str) -> list[int]:
        """Text → tokens, without the special tokens (BOS) the server adds to a prompt."""
        ...

    def detokenize(self, tokens: list[int]) -> str: ...

    def added_special_tokens(self) -> int:
        """How many special tokens (BOS, EOS) the model adds to a text prompt."""
        ...


class Workload(Protocol):
    def sessions(self, options: WorkloadOptions, tokenizer: Tokenizer | None) -> list[Session]: ...

    def warmup(
        self, options: WorkloadOptions, tokenizer: Tokenizer | None, n: int
    ) -> list[Session]:
        """`n` warm-up sessions whose prompts are none of the measured ones (a measured prompt
        sent during warm-up would be a prefix-cache hit when measured)."""
        ...


def _chat_warmup(n: int) -> list[Session]:
    # no workload's measured prompt starts like this, so none shares a prefix with it beyond
    # the chat template's own
    return [
        Session(id=f"warmup-{k}", user_turns=[f"Warm-up request {k + 1}: reply with one word."])
        for k in range(n)
    ]


class OasstWorkload:
    """OpenAssistant oasst1 validation threads of 5+ turns (bundled, Apache-2.0)."""

    def sessions(self, options: WorkloadOptions, tokenizer: Tokenizer | None) -> list[Session]:
        sessions = []
        for row in read_jsonl("oasst1", "oasst1-validation-en.threads-5plus.jsonl"):
            turns = row["turns"]
            users = [t["text"] for t in turns if t["role"] == "prompter"]
            answers: list[str | None] = [t["text"] for t in turns if t["role"] == "assistant"]
            answers += [None] * (len(users) - len(answers))
            sessions.append(
                Session(
                    id=row["message_tree_id"],
                    user_turns=users,
                    dataset_answers=answers,
                    meta={"n_turns": row["n_turns"]},
                )
            )
            if len(sessions) == options.conversations:
                break
        return sessions

    def warmup(
        self, options: WorkloadOptions, tokenizer: Tokenizer | None, n: int
    ) -> list[Session]:
        return _chat_warmup(n)


_FILLER_SOURCE = ("oasst1", "oasst1-validation-en.threads-5plus.jsonl")


def _filler_words() -> list[str]:
    words: list[str] = []
    for row in read_jsonl(*_FILLER_SOURCE):
        for turn in row["turns"]:
            words.extend(turn["text"].split())
    return words


def exact_length_text(tokenizer: Tokenizer, words: list[str], n_tokens: int) -> str:
    """A text that the tokenizer turns into exactly `n_tokens` tokens (no special tokens)."""
    return _exact_length(tokenizer, words, n_tokens)[0]


def _exact_length(tokenizer: Tokenizer, words: list[str], n_tokens: int) -> tuple[str, int]:
    """`exact_length_text` and the text's first token."""
    text = " ".join(words)
    tokens = tokenizer.tokenize(text)
    while len(tokens) < n_tokens + 8:
        text = text + " " + text
        tokens = tokenizer.tokenize(text)
    candidate = tokens[:n_tokens]
    for _ in range(8):
        text = tokenizer.detokenize(candidate)
        got = len(tokenizer.tokenize(text))
        if got == n_tokens:
            return text, candidate[0]
        # detokenize/tokenize did not round-trip at the cut: move the cut by the difference
        candidate = tokens[: len(candidate) + (n_tokens - got)]
    raise WorkloadError(f"could not build a prompt of exactly {n_tokens} tokens")


class SyntheticWorkload:
    """Completion prompts of exact token lengths and a fixed output length (`ignore_eos`).

    The length is the prompt as the server counts it: special tokens the model adds (Gemma's
    BOS) are part of it. No two prompts, warm-up ones included, start with the same token, so
    no request can reuse another's cache (a prefix shared by even one token would be a hit).
    """

    def sessions(self, options: WorkloadOptions, tokenizer: Tokenizer | None) -> list[Session]:
        return self._build(options, tokenizer, options.seed, options.requests_per_length, set())

    def warmup(
        self, options: WorkloadOptions, tokenizer: Tokenizer | None, n: int
    ) -> list[Session]:
        if n == 0:
            return []
        measured = self._build(options, tokenizer, options.seed, options.requests_per_length, set())
        used = {int(s.meta["first_token"]) for s in measured}
        one = options.model_copy(update={"prompt_tokens": options.prompt_tokens[:1]})
        sessions = self._build(one, tokenizer, options.seed + 1, n, used, prefix="warmup")
        return sessions

    def _build(
        self,
        options: WorkloadOptions,
        tokenizer: Tokenizer | None,
        seed: int,
        per_length: int,
        used: set[int],
        prefix: str = "synthetic",
    ) -> list[Session]:
        if tokenizer is None:
            raise WorkloadError("the synthetic workload needs a tokenizer (server or local)")
        special = tokenizer.added_special_tokens()
        words = _filler_words()
        rng = random.Random(f"{seed}:{options.salt or ''}")
        sessions = []
        for n in options.prompt_tokens:
            if n <= special:
                raise WorkloadError(
                    f"--prompt-tokens {n}: the model adds {special} special token(s) itself"
                )
            for k in range(per_length):
                for _ in range(_FIRST_TOKEN_TRIES):
                    start = rng.randrange(len(words))
                    sample = words[start:] + words[:start]
                    text, first = _exact_length(tokenizer, sample[: n * 2 + 16], n - special)
                    if first not in used:
                        break
                else:
                    raise WorkloadError("could not find prompts that start with different tokens")
                used.add(first)
                sessions.append(
                    Session(
                        id=f"{prefix}-{n}-{k}",
                        prompt=text,
                        max_tokens=options.output_tokens,
                        ignore_eos=True,
                        meta={"target_prompt_tokens": n, "first_token": first},
                    )
                )
        return sessions


_FIRST_TOKEN_TRIES = 200


class FileWorkload:
    """JSONL, one item a line: `{"prompt": str}` (a completion), `{"messages": [...]}` (one chat
    request with that history) or `{"turns": [str, ...]}` (a conversation replayed turn by
    turn); optional `id`, `max_tokens`, `system`."""

    def sessions(self, options: WorkloadOptions, tokenizer: Tokenizer | None) -> list[Session]:
        if options.path is None:
            raise WorkloadError("the file workload needs --file PATH")
        sessions = []
        try:
            lines = options.path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise WorkloadError(f"cannot read {options.path}: {exc}") from exc
        bad: list[str] = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                sessions.append(_file_session(item, number))
            except (ValueError, TypeError, KeyError) as exc:
                bad.append(f"{options.path}:{number}: {exc}")
        if bad:
            shown = bad[:MAX_BAD_LINES]
            more = len(bad) - len(shown)
            tail = [f"... and {more} more bad line(s)"] if more else []
            raise WorkloadError(f"{len(bad)} bad line(s):\n" + "\n".join(shown + tail))
        if not sessions:
            raise WorkloadError(f"{options.path} has no items")
        return sessions

    def warmup(
        self, options: WorkloadOptions, tokenizer: Tokenizer | None, n: int
    ) -> list[Session]:
        items = self.sessions(options, tokenizer)
        if all(s.prompt is not None for s in items):
            return [Session(id=f"warmup-{k}", prompt=f"Warm-up request {k + 1}.") for k in range(n)]
        return _chat_warmup(n)


MAX_BAD_LINES = 10


def _file_session(item: Any, number: int) -> Session:
    if not isinstance(item, dict):
        raise TypeError("each line must be a JSON object")
    common: dict[str, Any] = {
        "id": str(item.get("id", f"line-{number}")),
        "max_tokens": item.get("max_tokens"),
        "system": item.get("system"),
    }
    if "prompt" in item:
        return Session(prompt=str(item["prompt"]), **common)
    if "turns" in item:
        turns = [str(t) for t in item["turns"]]
        return Session(user_turns=turns, dataset_answers=[None] * len(turns), **common)
    if "messages" in item:
        messages = [
            {"role": str(m["role"]), "content": str(m["content"])} for m in item["messages"]
        ]
        if not messages or messages[-1]["role"] != "user":
            raise ValueError("`messages` must end with a user message")
        return Session(
            user_turns=[messages[-1]["content"]],
            dataset_answers=[None],
            history=messages[:-1],
            **common,
        )
    raise KeyError("each line needs `prompt`, `messages` or `turns`")


WORKLOADS: dict[str, Callable[[], Workload]] = {
    "oasst": OasstWorkload,
    "synthetic": SyntheticWorkload,
    "file": FileWorkload,
}


def get_workload(name: str) -> Workload:
    if name not in WORKLOADS:
        raise WorkloadError(f"unknown workload '{name}'; choose from {', '.join(WORKLOADS)}")
    return WORKLOADS[name]()
