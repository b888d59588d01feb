"""Runs one job at a time on a LlamaModel: generation (prefill, then token by token) and scoring.

The KV cache keeps the tokens of the last job, so the next turn of a conversation prefills only
what is new (prefix reuse). All of this runs on the scheduler's worker thread.
"""

from __future__ import annotations

import threading

import numpy as np

from edgellm.engine.generation import ActiveGeneration
from edgellm.engine.jobs import GenerationJob, SchedulerStats, common_prefix_len
from edgellm.engine.llama import LlamaModel
from edgellm.engine.logprobs import log_softmax_at
from edgellm.engine.types import FinishReason, LoglikelihoodRequest, LoglikelihoodResult

# Scoring requests ask llama.cpp for logits at many positions at once; the output buffer holds
# chunk x vocabulary floats (Gemma 3's 262k vocabulary: 64 x 262k x 4 B = 67 MB), so keep it small.
SCORING_CHUNK = 64


class Runner:
    """Executes jobs against one model; owns the knowledge of what the KV cache holds."""

    def __init__(self, model: LlamaModel) -> None:
        self.model = model
        self._cached: list[int] = []  # tokens whose KV is in the cache (sequence 0)
        self.stats = SchedulerStats()

    # -- prefix reuse -----------------------------------------------------------------------

    def _reuse_prefix(self, tokens: list[int]) -> int:
        """Keep the cached prefix shared with `tokens`; return how many tokens need no prefill."""
        n_keep = common_prefix_len(self._cached, tokens)
        n_keep = min(n_keep, len(tokens) - 1)  # the last token is evaluated for fresh logits
        if n_keep < len(self._cached) and not self.model.truncate_cache(n_keep):
            self.model.clear_cache()
            n_keep = 0
        del self._cached[n_keep:]
        if n_keep:
            self.stats.prefix_hits += 1
            self.stats.reused_tokens += n_keep
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
        model = self.model
        n_reused = self._reuse_prefix(job.request.prompt_tokens)
        gen = ActiveGeneration(job, model, n_reused)
        perf_start = model.perf()
        if not self._prefill(gen.prompt, n_reused, job.cancelled, last_logits=True):
            gen.finish(FinishReason.CANCELLED)
            return
        gen.pos = len(gen.prompt)
        perf_prefilled = model.perf()
        gen.timings.prompt_ms = perf_prefilled.total_ms - perf_start.total_ms
        while (reason := gen.accept(-1)) is None:
            model.decode([gen.next_token], gen.pos)
            self._cached.append(gen.next_token)
            gen.pos += 1
        gen.timings.predicted_ms = model.perf().total_ms - perf_prefilled.total_ms
        gen.finish(reason)

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
