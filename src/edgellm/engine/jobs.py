"""Units of work that schedulers run, and the bookkeeping they share."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from edgellm.engine.types import (
    GenerationEvent,
    GenerationRequest,
    LoglikelihoodRequest,
    LoglikelihoodResult,
    TokenLogprob,
)

EventSink = Callable[[GenerationEvent], None]


@dataclass(slots=True)
class GenerationJob:
    request: GenerationRequest
    sink: EventSink
    admitted_at: float = field(default_factory=time.perf_counter)
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass(slots=True)
class ScoringJob:
    requests: list[LoglikelihoodRequest]
    future: concurrent.futures.Future[list[LoglikelihoodResult]]
    index: int = 0
    results: list[LoglikelihoodResult] = field(default_factory=list)
    token_lps: list[float] = field(default_factory=list)
    details: list[TokenLogprob] = field(default_factory=list)  # with `top_logprobs` only
    greedy: bool = True
    pos: int = 0

    @property
    def current(self) -> LoglikelihoodRequest:
        return self.requests[self.index]

    def tokens(self) -> list[int]:
        r = self.current
        return r.context_tokens + r.continuation_tokens


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass(slots=True)
class SchedulerStats:
    """Counters a scheduler keeps for /metrics (read from other threads; ints only)."""

    steps: int = 0  # llama_decode calls
    tokens_in_batches: int = 0
    last_batch_size: int = 0
    prefix_hits: int = 0  # requests that reused cached tokens (slot or saved state)
    reused_tokens: int = 0
    state_saves: int = 0
    state_restores: int = 0
