"""Runs one job at a time on a LlamaModel: generation (prefill, then token by token) and scoring.

The KV cache keeps the tokens of the last job, so the next turn of a conversation prefills only
what is new (prefix reuse). All of this runs on the scheduler's worker thread.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edgellm.engine.llama import LlamaModel
from edgellm.engine.logprobs import log_softmax_at, token_logprob
from edgellm.engine.textstream import Emission, TextStream
from edgellm.engine.types import (
    Finished,
    FinishReason,
    GenerationEvent,
    GenerationRequest,
    LoglikelihoodRequest,
    LoglikelihoodResult,
    TextDelta,
    Timings,
)

EventSink = Callable[[GenerationEvent], None]

# Scoring requests ask llama.cpp for logits at many positions at once; the output buffer holds
# chunk x vocabulary floats (Gemma 3's 262k vocabulary: 64 x 262k x 4 B = 67 MB), so keep it small.
SCORING_CHUNK = 64


def common_prefix_len(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass(slots=True)
class GenerationJob:
    request: GenerationRequest
    sink: EventSink
    admitted_at: float = field(default_factory=time.perf_counter)
    cancelled: threading.Event = field(default_factory=threading.Event)


class Runner:
    """Executes jobs against one model; owns the knowledge of what the KV cache holds."""

    def __init__(self, model: LlamaModel) -> None:
        self.model = model
        self._cached: list[int] = []  # tokens whose KV is in the cache (sequence 0)

    # -- prefix reuse -----------------------------------------------------------------------

    def _reuse_prefix(self, tokens: list[int]) -> int:
        """Keep the cached prefix shared with `tokens`; return how many tokens need no prefill."""
        n_keep = common_prefix_len(self._cached, tokens)
        n_keep = min(n_keep, len(tokens) - 1)  # the last token is evaluated for fresh logits
        if n_keep < len(self._cached) and not self.model.truncate_cache(n_keep):
            self.model.clear_cache()
            n_keep = 0
        del self._cached[n_keep:]
        return n_keep

    def _prefill(
        self, tokens: list[int], start: int, cancelled: threading.Event, *, last_logits: bool
    ) -> bool:
        """Evaluate tokens[start:] in n_batch chunks; False if cancelled between chunks."""
        n_batch = self.model.settings.n_batch
        pos = start
        while pos < len(tokens):
            if cancelled.is_set():
                return False
            chunk = tokens[pos : pos + n_batch]
            is_last = pos + len(chunk) == len(tokens)
            self.model.decode(chunk, pos, logits="last" if (is_last and last_logits) else "none")
            self._cached.extend(chunk)
            pos += len(chunk)
        return True

    # -- generation -------------------------------------------------------------------------

    def generate(self, job: GenerationJob) -> None:
        req = job.request
        model = self.model
        started = time.perf_counter()
        timings = Timings(queue_ms=(started - job.admitted_at) * 1e3)
        prompt = req.prompt_tokens
        n_reused = self._reuse_prefix(prompt)
        timings.cache_n = n_reused
        timings.prompt_n = len(prompt) - n_reused

        perf_start = model.perf()
        if not self._prefill(prompt, n_reused, job.cancelled, last_logits=True):
            self._finish(job, FinishReason.CANCELLED, len(prompt), 0, timings, started)
            return
        perf_prefilled = model.perf()
        timings.prompt_ms = perf_prefilled.total_ms - perf_start.total_ms

        s = req.sampling
        seed = s.seed if s.seed is not None else random.getrandbits(32)
        sampler = model.new_sampler(
            temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, min_p=s.min_p, seed=seed
        )
        stream = TextStream(stop=req.stop)
        want_lp = req.logprobs
        top_k = req.top_logprobs
        pos = len(prompt)
        n_gen = 0
        reason = FinishReason.LENGTH
        try:
            while True:
                token = sampler.sample()
                n_gen += 1
                if n_gen == 1:
                    timings.ttft_ms = (time.perf_counter() - job.admitted_at) * 1e3
                if model.is_eog(token) and not req.ignore_eos:
                    reason = FinishReason.STOP
                    break
                lp = (
                    token_logprob(model.logits(-1), token, top_k, model.token_bytes)
                    if want_lp
                    else None
                )
                emission = stream.push(token, model.token_bytes(token), lp)
                if emission is not None:
                    job.sink(_delta(emission))
                if stream.stopped:
                    reason = FinishReason.STOP
                    break
                if n_gen >= req.max_tokens or pos >= model.n_ctx:
                    reason = FinishReason.LENGTH
                    break
                if job.cancelled.is_set():
                    reason = FinishReason.CANCELLED
                    break
                model.decode([token], pos)
                self._cached.append(token)
                pos += 1
        finally:
            sampler.close()
        tail = stream.flush()
        if tail is not None:
            job.sink(_delta(tail))
        timings.predicted_ms = model.perf().total_ms - perf_prefilled.total_ms
        self._finish(job, reason, len(prompt), n_gen, timings, started)

    @staticmethod
    def _finish(
        job: GenerationJob,
        reason: FinishReason,
        n_prompt: int,
        n_gen: int,
        timings: Timings,
        started: float,
    ) -> None:
        timings.predicted_n = n_gen
        timings.total_ms = (time.perf_counter() - job.admitted_at) * 1e3
        job.sink(
            Finished(
                reason=reason, prompt_tokens=n_prompt, completion_tokens=n_gen, timings=timings
            )
        )

    # -- scoring ----------------------------------------------------------------------------

    def loglikelihood(self, req: LoglikelihoodRequest) -> LoglikelihoodResult:
        """Sum of log P(continuation token | everything before it), and whether it is greedy.

        Only the positions that predict continuation tokens ask llama.cpp for logits, in chunks,
        so the whole-context logits matrix never exists.
        """
        ctx, cont = req.context_tokens, req.continuation_tokens
        if not ctx or not cont:
            raise ValueError("context and continuation must both be non-empty")
        tokens = ctx + cont
        never = threading.Event()
        n_keep = self._reuse_prefix(tokens[: len(ctx)])
        # Context up to (not including) its last token needs no logits.
        self._prefill(tokens[: len(ctx) - 1], n_keep, never, last_logits=False)
        pos = len(ctx) - 1
        scored = tokens[pos:-1]  # each predicts the next token
        token_lps: list[float] = []
        greedy = True
        for start in range(0, len(scored), SCORING_CHUNK):
            chunk = scored[start : start + SCORING_CHUNK]
            self.model.decode(chunk, pos + start, logits="all")
            self._cached.extend(chunk)
            for i in range(len(chunk)):
                row = self.model.logits(i)
                target = cont[start + i]
                lp, _ = log_softmax_at(row, target)
                token_lps.append(lp)
                greedy = greedy and int(np.argmax(row)) == target
        return LoglikelihoodResult(
            logprob=float(sum(token_lps)),
            is_greedy=greedy,
            token_logprobs=tuple(token_lps),
            n_tokens=len(cont),
        )


def _delta(e: Emission) -> TextDelta:
    return TextDelta(text=e.text, token_ids=tuple(e.token_ids), logprobs=tuple(e.logprobs))
