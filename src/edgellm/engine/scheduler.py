"""The engine's one loop: N slots (N = --parallel, 1 included), one worker thread, one
llama_decode per step.

Decode on a CPU is memory-bound: one step reads all the weights whether it advances one sequence
or four. The scheduler keeps N slots (llama.cpp sequence ids) in one KV cache and, at every
step, puts the next token of each decoding slot and a chunk of pending prompt tokens into one
batch. New requests join between steps; a long prompt is prefilled a chunk per step, so running
streams keep flowing; each slot samples with its own sampler chain. Pending prompts share a
step's prompt budget shortest first, and a step that ends a prompt (its first token) gives the
longer ones only a paced chunk, so a short request is not held up behind a long prompt
(`pacing.py` sizes the chunks). With one slot this is a plain serial loop: whole prompts in
n_batch chunks, then one token per step.

Slots remember the conversation they last served (`slots.choose_slot`), and a cache that would
be overwritten is saved to a bounded LRU of sequence states (`slots.SavedStates`), restored when
that conversation comes back.

Timings mean the same for every N: wall-clock time of this request's slot, from admission
(`queue_ms` before it), as llama-server reports them per slot.

The cache is either one pool of cells shared by all slots (`kv_unified`) or one stream of cells
per slot (llama-server's default). With per-slot streams, llama.cpp evaluates only consecutive
sequence ids together in one micro-batch, so a request without a cached prefix takes the free
slot that keeps the busy slots contiguous.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from edgellm.engine.generation import ActiveGeneration
from edgellm.engine.jobs import GenerationJob, SchedulerStats, ScoringJob, common_prefix_len
from edgellm.engine.llama import GrammarDeadEndError, LlamaModel
from edgellm.engine.logprobs import log_softmax_at, token_logprob
from edgellm.engine.pacing import PrefillPacer
from edgellm.engine.slots import MIN_SAVED_TOKENS, SavedStates, Slot, choose_slot
from edgellm.engine.types import (
    Failed,
    FinishReason,
    LoglikelihoodRequest,
    LoglikelihoodResult,
)
from edgellm.errors import EdgeLLMError, OverloadedError

log = logging.getLogger(__name__)

SCORING_CHUNK = 64  # positions with logits per step for scoring jobs (output buffer bound)


SHARED_WINDOW_S = 60.0  # how long after requests last ran side by side more are expected


class KVCacheFullError(EdgeLLMError):
    status_code = 503
    error_type = "server_error"
    code = "kv_cache_full"


Job = GenerationJob | ScoringJob


@dataclass(slots=True)
class Prefill:
    """Prompt tokens of one slot queued in this step's batch."""

    slot: Slot
    start: int  # first position queued
    n_tokens: int
    outputs: list[tuple[int, int]]  # (batch index, position) of the rows with logits


def _pending_tokens(slot: Slot) -> int:
    """Prompt (or scored) tokens `slot` has still to evaluate."""
    gen = slot.gen
    if gen is not None:
        return max(len(gen.prompt) - gen.pos, 0)
    job = slot.scoring
    if job is None:
        return 0
    n_tokens = len(job.current.context_tokens) + len(job.current.continuation_tokens)
    return max(n_tokens - job.pos, 0)


class Scheduler:
    """N slots, one worker thread, one llama_decode per step (see the module's docstring)."""

    def __init__(
        self,
        model: LlamaModel,
        *,
        n_slots: int,
        max_queue: int = 32,
        prefill_chunk: int = 0,
        saved_state_bytes: int = 256 * 1024 * 1024,
        name: str = "engine",
        start: bool = True,
    ) -> None:
        """`start=False`: no worker thread; the caller drives the loop with `admit()` and
        `step()` (tests, without llama.cpp)."""
        if n_slots > model.n_seq_max:
            raise ValueError(f"{n_slots} slots need a context with n_seq_max >= {n_slots}")
        self._model = model
        self._slots = [Slot(seq=i) for i in range(n_slots)]
        self._max_queue = max_queue
        # prefill_chunk 0: adapt to keep inter-token latency steady
        self._pacer = PrefillPacer(prefill_chunk, threads=model.n_threads)
        self._last_shared = -math.inf  # when two slots were last busy at once (monotonic)
        self._saved = SavedStates(saved_state_bytes)
        self._queue: deque[Job] = deque()
        self._cv = threading.Condition()
        self._closed = False
        self._admitted = 0
        self._mean_job_s = 2.0
        self.stats = SchedulerStats()
        self._thread = threading.Thread(target=self._work, name=f"{name}-scheduler", daemon=True)
        if start:
            self._thread.start()

    # -- Scheduler protocol -----------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def running(self) -> int:
        return sum(1 for s in self._slots if s.busy)

    @property
    def n_slots(self) -> int:
        return len(self._slots)

    def submit_generation(self, job: GenerationJob) -> None:
        self._enqueue(job)

    def submit_loglikelihood(
        self, requests: list[LoglikelihoodRequest]
    ) -> concurrent.futures.Future[list[LoglikelihoodResult]]:
        future: concurrent.futures.Future[list[LoglikelihoodResult]] = concurrent.futures.Future()
        if not requests:
            future.set_result([])
            return future
        self._enqueue(ScoringJob(requests=requests, future=future))
        return future

    def retry_after(self) -> float:
        waiting = len(self._queue) / max(1, len(self._slots))
        return max(1.0, math.ceil((waiting + 1) * self._mean_job_s))

    @property
    def slots(self) -> list[Slot]:
        return self._slots

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=60)

    def _enqueue(self, job: Job) -> None:
        with self._cv:
            if self._closed:
                raise OverloadedError("the engine is shutting down", retry_after=self.retry_after())
            # Waiting requests beyond the free slots count against the queue bound.
            free = sum(1 for s in self._slots if not s.busy)
            if len(self._queue) - free >= self._max_queue:
                raise OverloadedError(
                    f"the server is busy: {len(self._queue)} requests are already waiting",
                    retry_after=self.retry_after(),
                )
            self._queue.append(job)
            self._cv.notify()

    # -- the loop ---------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not any(s.busy for s in self._slots):
                    if self._closed:
                        return
                    self._cv.wait()
                self.admit()
            try:
                self.step()
            except Exception as exc:  # a bug or a llama.cpp failure: fail the active jobs
                log.exception("batch step failed")
                for slot in self._slots:
                    self._fail(slot, exc)

    def admit(self) -> None:
        """Move queued jobs into free slots (FIFO), choosing the slot with the best cache."""
        while self._queue:
            job = self._queue[0]
            if isinstance(job, GenerationJob) and job.cancelled.is_set():
                self._queue.popleft()  # the client left while waiting: nothing to report
                continue
            if all(s.busy for s in self._slots):
                return
            self._queue.popleft()
            # A scoring job reuses at most its context: every continuation position must be
            # evaluated for its logits (a cache holding the continuation too, as after
            # generating it, would leave nothing to score).
            if isinstance(job, GenerationJob):
                tokens = job.request.prompt_tokens
            else:
                tokens = job.current.context_tokens
            try:
                slot, n_keep = self._place(tokens)
                gen = (
                    ActiveGeneration(job, self._model, n_keep)
                    if isinstance(job, GenerationJob)
                    else None
                )
            except Exception as exc:  # a bug or a llama.cpp failure: this job fails, not the loop
                log.exception("admission failed")
                self._reject(job, exc)
                continue
            self._admitted += 1
            slot.order = self._admitted
            slot.last_used = time.perf_counter()
            if gen is not None:
                slot.gen = gen
            else:
                assert isinstance(job, ScoringJob)
                job.pos = n_keep
                slot.scoring = job

    def _reject(self, job: Job, exc: Exception) -> None:
        """Fail a job that could not be admitted; what the idle slots hold is no longer sure."""
        if isinstance(job, GenerationJob):
            job.sink(Failed(error=exc))
        else:
            job.future.set_exception(exc)
        for slot in self._slots:
            if not slot.busy:
                self._model.clear_seq(slot.seq)
                slot.cached = []

    def _place(self, tokens: list[int]) -> tuple[Slot, int]:
        """Choose a free slot for `tokens` and prepare its cache: save, restore, cut."""
        plan = choose_slot(
            self._slots, tokens, saved=self._saved, kv_unified=self._model.settings.kv_unified
        )
        slot, n_keep = plan.slot, plan.n_keep
        # taken before the slot's own cache is saved: that save may evict it from the LRU
        restore = self._saved.get(plan.restore) if plan.restore is not None else None
        if plan.save_current:
            self._save(slot)
        if plan.restore is not None and restore is not None:
            if self._model.restore_seq(slot.seq, restore):
                slot.cached = list(plan.restore)
                self.stats.state_restores += 1
            else:
                self._model.clear_seq(slot.seq)
                slot.cached = []
                n_keep = 0
        if n_keep < len(slot.cached) and not self._model.truncate_cache(n_keep, slot.seq):
            self._model.clear_seq(slot.seq)
            n_keep = 0
        del slot.cached[n_keep:]
        if n_keep:
            self.stats.prefix_hits += 1
            self.stats.reused_tokens += n_keep
        return slot, n_keep

    def _save(self, slot: Slot) -> None:
        if len(slot.cached) >= MIN_SAVED_TOKENS and self._saved.max_bytes > 0:
            self._saved.put(slot.cached, self._model.save_seq(slot.seq))
            self.stats.state_saves += 1

    def _prefill_budget(self, n_decoding: int, *, joinable: bool) -> int:
        room = self._model.settings.n_batch - n_decoding
        return self._pacer.budget(n_decoding, room, joinable=joinable)

    def step(self) -> None:
        model = self._model
        model.batch_clear()
        decoding_slots: set[int] = set()
        pending: list[Slot] = []  # slots with prompt tokens still to evaluate
        for slot in self._slots:
            gen = slot.gen
            if gen is not None and not gen.prefilling:
                if gen.job.cancelled.is_set():
                    self._finish(slot, FinishReason.CANCELLED)
                    continue
                decoding_slots.add(slot.seq)
            elif slot.busy:
                pending.append(slot)
        shares: dict[int, int] = {}  # seq -> prompt tokens queued this step
        n_busy = len(decoding_slots) + len(pending)
        now = time.monotonic()
        if n_busy >= 2:
            self._last_shared = now
        if pending:  # (a decode-only step skips the pacer)
            # A request may join during the step: a slot is free, and the node has served
            # requests side by side lately (a node serving one client at a time keeps
            # whole-batch prefill steps, the fastest).
            joinable = n_busy < len(self._slots) and now - self._last_shared < SHARED_WINDOW_S
            budget = self._prefill_budget(len(decoding_slots), joinable=joinable)
            # Shortest pending prompt first (then admission order): a short prompt that joins
            # while a long one is being prefilled gets its first token after a step or two
            # instead of after the whole long prompt, which waits only for the short one's
            # tokens (vLLM's partial prefills do the same). Slots are few, so a long prompt
            # waits for at most the other slots' prompts.
            completing = False  # a prompt of this step gets its first token at the step's end
            for slot in sorted(pending, key=lambda s: (_pending_tokens(s), s.order)):
                if budget <= 0:
                    break
                n = self._prefill_take(slot, budget)
                if n <= 0:
                    continue
                left = _pending_tokens(slot)
                if completing and n < left:
                    # a prompt that cannot finish in this step gets only a mixed step's chunk,
                    # so that the first token of the one that does is not held up
                    paced = self._prefill_budget(len(decoding_slots) + 1, joinable=False)
                    n = min(n, paced)
                shares[slot.seq] = n
                budget -= n
                completing = completing or (slot.gen is not None and n == left)
        # With per-slot KV cells llama.cpp cuts a batch into micro-batches of consecutive
        # sequence ids, taken in the order they first appear: tokens go in by sequence id, so
        # that one micro-batch carries the next token of every slot (a joining prompt listed
        # after the decoding slots would cost a graph pass of its own).
        decoding: list[tuple[Slot, int]] = []
        prefills: list[Prefill] = []
        for slot in self._slots:
            if slot.seq in decoding_slots:
                gen = slot.gen
                assert gen is not None
                index = model.batch_add(gen.next_token, gen.pos, slot.seq, logits=True)
                decoding.append((slot, index))
            elif slot.seq in shares:
                prefills.append(self._add_prefill(slot, shares[slot.seq]))
        if model.batch_len == 0:
            return
        started = time.perf_counter()
        rc = model.batch_decode()
        elapsed = time.perf_counter() - started
        if rc == 1:
            self._on_kv_full(prefills)
            return
        self._account(len(decoding), model.batch_len, elapsed)

        for slot, index in decoding:
            gen = slot.gen
            assert gen is not None
            slot.cached.append(gen.next_token)
            gen.pos += 1
            try:
                reason = gen.accept(index)
            except GrammarDeadEndError as exc:
                self._fail(slot, exc)
                continue
            if reason is not None:
                self._finish(slot, reason)
        for part in prefills:
            slot = part.slot
            if slot.gen is not None and not slot.gen.prefilling:
                gen = slot.gen  # the whole prompt is in: sample the first token
                gen.timings.prompt_ms = (time.perf_counter() - gen.started) * 1e3
                try:
                    reason = gen.accept(part.outputs[-1][0])
                except GrammarDeadEndError as exc:
                    self._fail(slot, exc)
                    continue
                if reason is not None:
                    self._finish(slot, reason)
            elif slot.scoring is not None:
                self._collect_scores(slot, part.outputs)

    def _account(self, n_decoding: int, n_batch: int, elapsed: float) -> None:
        self.stats.steps += 1
        self.stats.tokens_in_batches += n_batch
        self.stats.last_batch_size = n_batch
        self._pacer.record(n_decoding, n_batch - n_decoding, elapsed)

    def _prefill_take(self, slot: Slot, budget: int) -> int:
        """How many of `slot`'s pending prompt tokens fit in `budget` (0: none pending)."""
        gen = slot.gen
        if gen is not None:
            if not gen.prefilling:
                return 0
            if gen.job.cancelled.is_set():
                self._finish(slot, FinishReason.CANCELLED)
                return 0
            return min(budget, _pending_tokens(slot))
        job = slot.scoring
        if job is None:
            return 0
        n_ctx = len(job.current.context_tokens)
        start = job.pos
        # Positions before n_ctx - 1 need no logits; from there each predicts the next token,
        # and logits rows are kept to SCORING_CHUNK per step.
        if start < n_ctx - 1:
            end = min(start + budget, n_ctx - 1)
        else:
            n_tokens = n_ctx + len(job.current.continuation_tokens)
            end = min(start + min(budget, SCORING_CHUNK), n_tokens - 1)
        return max(end - start, 0)

    def _add_prefill(self, slot: Slot, n: int) -> Prefill:
        """Queue the next `n` pending prompt tokens of `slot` (as `_prefill_take` counted)."""
        model = self._model
        gen = slot.gen
        if gen is not None:
            start = gen.pos
            chunk = gen.prompt[start : start + n]
            outputs = []
            for i, token in enumerate(chunk):
                last = start + i == len(gen.prompt) - 1
                index = model.batch_add(token, start + i, slot.seq, logits=last)
                if last:
                    outputs.append((index, start + i))
            slot.cached.extend(chunk)
            gen.pos += len(chunk)
            return Prefill(slot, start, len(chunk), outputs)
        job = slot.scoring
        assert job is not None
        tokens = job.tokens()
        n_ctx = len(job.current.context_tokens)
        start = job.pos
        end = start + n
        outputs = []
        for pos in range(start, end):
            want = pos >= n_ctx - 1
            index = model.batch_add(tokens[pos], pos, slot.seq, logits=want)
            if want:
                outputs.append((index, pos))
        slot.cached.extend(tokens[start:end])
        job.pos = end
        return Prefill(slot, start, end - start, outputs)

    def _collect_scores(self, slot: Slot, outputs: list[tuple[int, int]]) -> None:
        job = slot.scoring
        assert job is not None
        req = job.current
        n_ctx = len(req.context_tokens)
        for index, pos in outputs:  # the logits at `pos` predict the token at pos + 1
            row = self._model.logits(index)
            target = req.continuation_tokens[pos + 1 - n_ctx]
            if req.top_logprobs is None:
                lp, _ = log_softmax_at(row, target)
            else:  # the same log-prob (token_logprob computes it with log_softmax_at)
                detail = token_logprob(row, target, req.top_logprobs, self._model.token_bytes)
                job.details.append(detail)
                lp = detail.logprob
            job.token_lps.append(lp)
            job.greedy = job.greedy and int(np.argmax(row)) == target
        if len(job.token_lps) < len(req.continuation_tokens):
            return
        job.results.append(
            LoglikelihoodResult(
                logprob=float(sum(job.token_lps)),
                is_greedy=job.greedy,
                token_logprobs=tuple(job.token_lps),
                n_tokens=len(req.continuation_tokens),
                tokens=tuple(job.details),
            )
        )
        job.index += 1
        job.token_lps = []
        job.details = []
        job.greedy = True
        if job.index == len(job.requests):
            slot.scoring = None
            slot.last_used = time.perf_counter()
            job.future.set_result(job.results)
            return
        # The next pair keeps what it shares with this slot's cache.
        tokens = job.tokens()
        n_keep = min(common_prefix_len(slot.cached, tokens), len(job.current.context_tokens) - 1)
        if n_keep < len(slot.cached) and not self._model.truncate_cache(n_keep, slot.seq):
            self._model.clear_seq(slot.seq)
            n_keep = 0
        del slot.cached[n_keep:]
        job.pos = n_keep

    # -- endings ----------------------------------------------------------------------------

    def _finish(self, slot: Slot, reason: FinishReason) -> None:
        gen = slot.gen
        if gen is None:
            return
        if gen.first_token_at:
            gen.timings.predicted_ms = (time.perf_counter() - gen.first_token_at) * 1e3
        slot.gen = None
        slot.last_used = time.perf_counter()
        self._mean_job_s = 0.8 * self._mean_job_s + 0.2 * (slot.last_used - gen.started)
        gen.finish(reason)

    def _fail(self, slot: Slot, exc: Exception) -> None:
        if slot.gen is not None:
            gen, slot.gen = slot.gen, None
            gen.sampler.close()
            gen.job.sink(Failed(error=exc))
        if slot.scoring is not None:
            job, slot.scoring = slot.scoring, None
            job.future.set_exception(exc)
        # What the sequence holds is no longer known for sure.
        self._model.clear_seq(slot.seq)
        slot.cached = []

    def _on_kv_full(self, prefills: list[Prefill]) -> None:
        """No room for the batch: drop idle caches first, else fail the newest request.

        llama.cpp left its memory as before the call, so this step's prefill is undone too.
        """
        for part in prefills:
            slot = part.slot
            if slot.gen is not None:
                slot.gen.pos = part.start
            elif slot.scoring is not None:
                slot.scoring.pos = part.start
            del slot.cached[part.start :]
        idle = [s for s in self._slots if not s.busy and s.cached]
        if idle:
            for s in idle:
                self._model.clear_seq(s.seq)
                s.cached = []
            return
        newest = max((s for s in self._slots if s.busy), key=lambda s: s.order, default=None)
        if newest is not None:
            self._fail(
                newest,
                KVCacheFullError(
                    f"the KV cache ({self._model.kv_cells} tokens for {len(self._slots)} "
                    "slots) is full; retry later or send a shorter request"
                ),
            )
