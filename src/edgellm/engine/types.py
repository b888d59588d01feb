"""Engine-level data: what a generation request asks for and what it produces.

These types are independent of HTTP (see `edgellm.wire.schemas` for the wire format) and of
llama.cpp, so a different scheduler or backend can produce the same events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from edgellm.config import DEFAULT_MAX_TOKENS
from edgellm.engine.penalties import PenaltySettings


class FinishReason(StrEnum):
    STOP = "stop"  # end-of-generation token or a stop sequence
    LENGTH = "length"  # max_tokens reached, or the context window is full
    CANCELLED = "cancelled"  # the client went away
    TOOL_CALLS = "tool_calls"  # the answer is tool calls (set by the wire layer, which parses them)


# Temperatures below this decode greedily (vLLM's rule too): dividing logits by a smaller one
# overflows float32, the softmax turns to NaN and the draw falls on the vocabulary's last token.
GREEDY_BELOW = 1e-5


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Sampling settings. A temperature below `GREEDY_BELOW` means greedy decoding
    (deterministic)."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    # (token id, bias added to its logit) pairs; ids are checked against the vocabulary by the
    # engine before a job is queued (llama.cpp indexes its arrays with them unchecked)
    logit_bias: tuple[tuple[int, float], ...] = ()
    # a GBNF grammar (root rule `root`) every generated text must follow; compiled and checked
    # by the engine before the job is queued
    grammar: str | None = None
    penalties: PenaltySettings = field(default_factory=PenaltySettings)

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One generation: a tokenized prompt and how to continue it."""

    prompt_tokens: list[int]
    max_tokens: int = DEFAULT_MAX_TOKENS
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: tuple[str, ...] = ()
    # 0 = no log-probs; k > 0 = log-prob of each generated token plus the k-1... see `top_logprobs`.
    logprobs: bool = False
    top_logprobs: int = 0
    ignore_eos: bool = False
    # the end-of-generation token that ends the answer is in its log-probs too (empty text), as
    # OpenAI's legacy completions have it: lm-eval drops an echo's last entry as the answer's
    eog_logprob: bool = False


@dataclass(frozen=True, slots=True)
class TopLogprob:
    token: str
    token_id: int
    logprob: float
    bytes: bytes


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """The chosen token's log-prob under the model's distribution, and the top-k alternatives."""

    token: str
    token_id: int
    logprob: float
    bytes: bytes
    top: tuple[TopLogprob, ...] = ()


@dataclass(slots=True)
class Timings:
    """Per-request timings. Prefill and decode figures come from llama.cpp's own counters.

    Field names follow llama-server's `timings` object so that existing clients read them;
    `queue_ms` and `ttft_ms` are EdgeLLM additions measured with a monotonic clock.
    """

    queue_ms: float = 0.0
    ttft_ms: float = 0.0
    cache_n: int = 0  # prompt tokens whose KV was reused from the previous request
    prompt_n: int = 0  # prompt tokens actually evaluated (prefill)
    prompt_ms: float = 0.0
    predicted_n: int = 0  # generated tokens
    predicted_ms: float = 0.0  # time spent decoding them after the first one
    total_ms: float = 0.0  # from admission to the last token

    @property
    def prompt_per_second(self) -> float:
        return 1e3 * self.prompt_n / self.prompt_ms if self.prompt_ms > 0 else 0.0

    @property
    def predicted_per_second(self) -> float:
        # The first generated token comes from the prefill's logits: decode time covers the rest.
        decoded = self.predicted_n - 1
        return 1e3 * decoded / self.predicted_ms if self.predicted_ms > 0 and decoded > 0 else 0.0

    def as_dict(self) -> dict[str, float | int]:
        decoded = max(self.predicted_n - 1, 0)
        prompt_ms, predicted_ms = self.prompt_ms, self.predicted_ms
        return {
            "queue_ms": _ms3(self.queue_ms),
            "ttft_ms": _ms3(self.ttft_ms),
            "cache_n": self.cache_n,
            "prompt_n": self.prompt_n,
            "prompt_ms": _ms3(prompt_ms),
            "prompt_per_token_ms": _ms3(prompt_ms / self.prompt_n) if self.prompt_n else 0.0,
            "prompt_per_second": _ms3(self.prompt_per_second),
            "predicted_n": self.predicted_n,
            "predicted_ms": _ms3(predicted_ms),
            "predicted_per_token_ms": _ms3(predicted_ms / decoded) if decoded else 0.0,
            "predicted_per_second": _ms3(self.predicted_per_second),
            "total_ms": _ms3(self.total_ms),
        }


def _ms3(value: float) -> float:
    """`value` to 3 decimals, half away from zero. (`round(value, 3)` gives the correctly
    rounded decimal through a string conversion, several times slower, and this object is
    written into every answer.)"""
    scaled = value * 1000.0
    if not math.isfinite(scaled):
        return value
    return (math.floor(scaled + 0.5) if scaled >= 0 else math.ceil(scaled - 0.5)) / 1000.0


@dataclass(frozen=True, slots=True)
class TextDelta:
    """New text, and the tokens that produced it (log-probs aligned with `token_ids`)."""

    text: str
    token_ids: tuple[int, ...]
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a tool call, in OpenAI's streamed shape: the first piece of call `index` has
    its `id` and `name`, the next ones fragments of its `arguments` (a JSON text). `done`: the
    arguments are complete (a whole JSON value that the grammar held to the tool's schema).
    The engine generates text only; `wire/tools.py` parses it into these, and an upstream's
    answer is decoded into them."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    done: bool = False


@dataclass(frozen=True, slots=True)
class Finished:
    """The last event of a generation."""

    reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    timings: Timings


@dataclass(frozen=True, slots=True)
class Failed:
    """The generation could not run; `error` says why. Ends the stream like `Finished`."""

    error: Exception


GenerationEvent = TextDelta | ToolCallDelta | Finished | Failed


@dataclass(frozen=True, slots=True)
class LoglikelihoodRequest:
    """Score `continuation` after `context` (token ids, context non-empty).

    `top_logprobs`: None scores only (sums and greedy flags); k >= 0 also gives each
    continuation token as a `TokenLogprob` with its k most likely alternatives (a text
    completion's `echo` of its prompt)."""

    context_tokens: list[int]
    continuation_tokens: list[int]
    top_logprobs: int | None = None


@dataclass(frozen=True, slots=True)
class LoglikelihoodResult:
    logprob: float  # sum of the continuation tokens' log-probs
    is_greedy: bool  # every continuation token is the argmax given what precedes it
    token_logprobs: tuple[float, ...]
    n_tokens: int
    tokens: tuple[TokenLogprob, ...] = ()  # when the request set `top_logprobs`
