"""How a server scores continuations: one method, `score(pairs)`, behind a name.

- `loglikelihood`: EdgeLLM's `/v1/loglikelihood` (exact, batched, per-token log-probs).
- `echo`: `/v1/completions` with `echo: true, logprobs: 1, max_tokens: 0`, the legacy OpenAI way
  that vLLM, EdgeLLM and others support (one request per pair, unbatched: against EdgeLLM
  `loglikelihood` is the faster).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from edgellm.wire import decode


class EvalBackendError(Exception):
    """The server cannot score (missing endpoint, error response)."""


@dataclass(frozen=True)
class Scored:
    logprob: float
    token_logprobs: tuple[float, ...]
    is_greedy: bool | None = None


class Scorer(Protocol):
    def score(self, pairs: Sequence[tuple[str, str]]) -> list[Scored]: ...


def _error(response: httpx.Response) -> str:
    return f"{response.status_code}: {decode.error_text(response.content, limit=300)}"


class LoglikelihoodScorer:
    """EdgeLLM `/v1/loglikelihood` (`client` has the server root as base URL)."""

    def __init__(self, client: httpx.Client, model: str) -> None:
        self.client = client
        self.model = model

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[Scored]:
        body = {
            "model": self.model,
            "items": [{"context": c, "continuation": x} for c, x in pairs],
        }
        response = self.client.post("/v1/loglikelihood", json=body)
        if response.status_code != 200:
            raise EvalBackendError(f"/v1/loglikelihood failed: {_error(response)}")
        data = sorted(response.json()["data"], key=lambda d: d["index"])
        return [
            Scored(
                logprob=float(d["logprob"]),
                token_logprobs=tuple(float(x) for x in d["token_logprobs"]),
                is_greedy=bool(d["is_greedy"]),
            )
            for d in data
        ]


class EchoScorer:
    """`/v1/completions` with echo: the continuation's tokens are those starting at or after
    the end of the context (by `text_offset`), as lm-eval's OpenAI completions backend does."""

    def __init__(self, client: httpx.Client, model: str) -> None:
        self.client = client
        self.model = model

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[Scored]:
        return [self._one(context, continuation) for context, continuation in pairs]

    def _one(self, context: str, continuation: str) -> Scored:
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": context + continuation,
            "max_tokens": 0,
            "echo": True,
            "logprobs": 1,
            "temperature": 0,
        }
        response = self.client.post("/v1/completions", json=body)
        if response.status_code != 200:
            raise EvalBackendError(f"/v1/completions (echo) failed: {_error(response)}")
        logprobs = response.json()["choices"][0].get("logprobs") or {}
        offsets = logprobs.get("text_offset") or []
        token_lps = logprobs.get("token_logprobs") or []
        if not offsets or len(offsets) != len(token_lps):
            raise EvalBackendError(
                "the server did not return prompt log-probs for echo=true; "
                "use an EdgeLLM server (/v1/loglikelihood) or one that supports echo"
            )
        picked: list[float] = []
        for offset, lp in zip(offsets, token_lps, strict=True):
            if offset >= len(context) and lp is not None:
                picked.append(float(lp))
        if not picked:
            raise EvalBackendError("no continuation tokens found in the echoed prompt")
        return Scored(logprob=sum(picked), token_logprobs=tuple(picked))


ScorerFactory = Callable[[httpx.Client, str], Scorer]
SCORERS: dict[str, ScorerFactory] = {"loglikelihood": LoglikelihoodScorer, "echo": EchoScorer}


def make_scorer(name: str, client: httpx.Client, model: str) -> Scorer:
    """`auto` picks `loglikelihood` when the server offers it, else `echo`."""
    if name == "auto":
        probe = client.post("/v1/loglikelihood", json={"model": model, "items": []})
        name = "echo" if probe.status_code in (404, 405) else "loglikelihood"
    if name not in SCORERS:
        raise EvalBackendError(f"unknown scorer '{name}'; choose from auto, {', '.join(SCORERS)}")
    return SCORERS[name](client, model)


class Tokenizer(Protocol):
    @property
    def n_special(self) -> int:
        """Tokens `tokenize` adds to every text (1 with a BOS, else 0)."""
        ...

    def tokenize(self, text: str) -> list[int]: ...

    def detokenize(self, tokens: list[int]) -> str: ...


class ServerTokenizer:
    """The server's `/tokenize` and `/detokenize` (llama-server compatible), BOS included."""

    def __init__(self, client: httpx.Client, model: str) -> None:
        self.client = client
        self.model = model
        self._n_special: int | None = None

    @property
    def n_special(self) -> int:
        if self._n_special is None:
            self._n_special = len(self.tokenize(""))
        return self._n_special

    def detokenize(self, tokens: list[int]) -> str:
        response = self.client.post("/detokenize", json={"tokens": tokens, "model": self.model})
        if response.status_code != 200:
            raise EvalBackendError(f"/detokenize failed: {_error(response)}")
        return str(response.json()["content"])

    def tokenize(self, text: str) -> list[int]:
        response = self.client.post(
            "/tokenize", json={"content": text, "add_special": True, "model": self.model}
        )
        if response.status_code != 200:
            raise EvalBackendError(f"/tokenize failed: {_error(response)}")
        return [int(t) for t in response.json()["tokens"]]
