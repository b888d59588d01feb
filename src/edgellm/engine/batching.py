"""Continuous batching: several requests share every llama_decode call.

Decode on a CPU is memory-bound: one step reads all the weights whether it advances one sequence
or four. `BatchScheduler` keeps N slots (llama.cpp sequence ids) in one KV cache and, at every
step, puts the next token of each decoding slot and a chunk of pending prompt tokens
into one batch. New requests join between steps; a long prompt is prefilled a chunk per step, so
running streams keep flowing; each slot samples with its own sampler chain.

Slots remember the conversation they last served. A new request takes the idle slot whose cached
tokens share the longest prefix with its prompt, so the next turn of each of several concurrent
conversations prefills only its new tokens. A slot's cache that would be overwritten is saved to
a bounded LRU of sequence states, restored when that conversation comes back.

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
from collections import OrderedDict, deque
from dataclasses import dataclass, field

import numpy as np

from edgellm.engine.generation import ActiveGeneration
from edgellm.engine.jobs import GenerationJob, SchedulerStats, common_prefix_len
from edgellm.engine.llama import LlamaModel
from edgellm.engine.logprobs import log_softmax_at
from edgellm.engine.pacing import PrefillPacer
from edgellm.engine.types import (
    Failed,
    FinishReason,
    LoglikelihoodRequest,
    LoglikelihoodResult,
)
from edgellm.errors import EdgeLLMError, OverloadedError

log = logging.getLogger(__name__)

SCORING_CHUNK = 64  # positions with logits per step for scoring jobs (output buffer bound)
MIN_SAVED_TOKENS = 32  # shorter caches are cheaper to prefill again than to save
MIN_REUSED_TOKENS = 16  # a shared prefix shorter than this is not worth another slot's cache


class KVCacheFullError(EdgeLLMError):
    status_code = 503
    error_type = "server_error"
    code = "kv_cache_full"


@dataclass(slots=True)
class ScoringJob:
    requests: list[LoglikelihoodRequest]
    future: concurrent.futures.Future[list[LoglikelihoodResult]]
    index: int = 0
    results: list[LoglikelihoodResult] = field(default_factory=list)
    token_lps: list[float] = field(default_factory=list)
    greedy: bool = True
    pos: int = 0

    @property
    def current(self) -> LoglikelihoodRequest:
        return self.requests[self.index]

    def tokens(self) -> list[int]:
        r = self.current
        return r.context_tokens + r.continuation_tokens


Job = GenerationJob | ScoringJob


@dataclass(slots=True)
class Slot:
    seq: int
    cached: list[int] = field(default_factory=list)  # tokens whose KV sits in this sequence
    last_used: float = 0.0
    gen: ActiveGeneration | None = None
    scoring: ScoringJob | None = None
    order: int = 0  # admission order, for fair prefill

    @property
    def busy(self) -> bool:
        return self.gen is not None or self.scoring is not None


@dataclass(slots=True)
class Prefill:
    """Prompt tokens of one slot queued in this step's batch."""

    slot: Slot
    start: int  # first position queued
    n_tokens: int
    outputs: list[tuple[int, int]]  # (batch index, position) of the rows with logits


class SavedStates:
    """An LRU of saved sequence states, bounded in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[int, ...], bytearray] = OrderedDict()
        self._bytes = 0

    def put(self, tokens: list[int], state: bytearray) -> None:
        if len(state) > self.max_bytes:
            return
        key = tuple(tokens)
        if key in self._items:
            self._bytes -= len(self._items.pop(key))
        self._items[key] = state
        self._bytes += len(state)
        while self._bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self._bytes -= len(old)

    def best(self, prompt: list[int]) -> tuple[tuple[int, ...], int] | None:
        """The saved token sequence sharing the longest prefix with `prompt`, and that length."""
        best: tuple[tuple[int, ...], int] | None = None
        for key in self._items:
            n = common_prefix_len(list(key), prompt)
            if n and (best is None or n > best[1]):
                best = (key, n)
        return best

    def get(self, key: tuple[int, ...]) -> bytearray:
        """The state saved for `key` (kept, and marked most recently used)."""
        self._items.move_to_end(key)
        return self._items[key]

    def __len__(self) -> int:
        return len(self._items)


class BatchScheduler:
    """The continuous-batching `Scheduler`: N slots, one worker, one llama_decode per step."""

    def __init__(
        self,
        model: LlamaModel,
        *,
        n_slots: int,
        max_queue: int = 32,
        prefill_chunk: int = 0,
        saved_state_bytes: int = 256 * 1024 * 1024,
        name: str = "engine",
    ) -> None:
        if n_slots > model.n_seq_max:
            raise ValueError(f"{n_slots} slots need a context with n_seq_max >= {n_slots}")
        self._model = model
        self._slots = [Slot(seq=i) for i in range(n_slots)]
        self._max_queue = max_queue
        self._pacer = PrefillPacer(prefill_chunk)  # 0 = adapt to keep inter-token latency steady
        self._saved = SavedStates(saved_state_bytes)
        self._queue: deque[Job] = deque()
        self._cv = threading.Condition()
        self._closed = False
        self._admitted = 0
        self._mean_job_s = 2.0
        self.stats = SchedulerStats()
        self._thread = threading.Thread(target=self._work, name=f"{name}-batcher", daemon=True)
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

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
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
                self._admit()
            try:
                self._step()
            except Exception as exc:  # a bug or a llama.cpp failure: fail the active jobs
                log.exception("batch step failed")
                for slot in self._slots:
                    self._fail(slot, exc)

    def _admit(self) -> None:
        """Move queued jobs into free slots (FIFO), choosing the slot with the best cache."""
        while self._queue:
            job = self._queue[0]
            if isinstance(job, GenerationJob) and job.cancelled.is_set():
                self._queue.popleft()  # the client left while waiting: nothing to report
                continue
            free = [s for s in self._slots if not s.busy]
            if not free:
                return
            self._queue.popleft()
            tokens = job.request.prompt_tokens if isinstance(job, GenerationJob) else job.tokens()
            slot, n_keep = self._place(free, tokens)
            self._admitted += 1
            slot.order = self._admitted
            slot.last_used = time.perf_counter()
            if isinstance(job, GenerationJob):
                slot.gen = ActiveGeneration(job, self._model, n_keep)
            else:
                job.pos = n_keep
                slot.scoring = job

    def _place(self, free: list[Slot], tokens: list[int]) -> tuple[Slot, int]:
        """Pick a slot for `tokens` and prepare its cache; return it and the reusable length.

        The slot holding this conversation wins: its cache is mostly a prefix of the prompt.
        Otherwise nobody's conversation is displaced if an empty slot is free (a shared system
        prompt alone is not worth another conversation's cache); failing that, the slot with the
        longest useful prefix, then the shortest, least recently used cache. With per-slot cells,
        keeping the busy slots contiguous comes first among those. A saved state with a longer
        prefix is restored into the chosen slot.
        """
        limit = len(tokens) - 1  # the last prompt token is always evaluated for fresh logits
        prefix = {s.seq: min(common_prefix_len(s.cached, tokens), limit) for s in free}
        slot = max(free, key=lambda s: (prefix[s.seq], -s.last_used))
        best_n = prefix[slot.seq]
        lost = len(slot.cached) - best_n
        if best_n < MIN_REUSED_TOKENS or (lost >= MIN_SAVED_TOKENS and best_n < lost):

            def useful(s: Slot) -> int:
                return prefix[s.seq] if prefix[s.seq] >= MIN_REUSED_TOKENS else 0

            slot = min(
                free,
                key=lambda s: (
                    self._runs_with(s),
                    bool(s.cached),
                    -useful(s),
                    len(s.cached),
                    s.last_used,
                ),
            )
            best_n = prefix[slot.seq]
        saved = self._saved.best(tokens)
        if saved is not None and min(saved[1], limit) >= max(best_n + 1, MIN_REUSED_TOKENS):
            self._save(slot)
            if self._model.restore_seq(slot.seq, self._saved.get(saved[0])):
                slot.cached = list(saved[0])
                best_n = min(saved[1], limit)
                self.stats.state_restores += 1
            else:
                self._model.clear_seq(slot.seq)
                slot.cached = []
                best_n = 0
        elif len(slot.cached) - best_n >= MIN_SAVED_TOKENS:
            self._save(slot)  # another conversation takes this slot: keep the old one aside
        if best_n < len(slot.cached) and not self._model.truncate_cache(best_n, slot.seq):
            self._model.clear_seq(slot.seq)
            best_n = 0
        del slot.cached[best_n:]
        if best_n:
            self.stats.prefix_hits += 1
            self.stats.reused_tokens += best_n
        return slot, best_n

    def _runs_with(self, candidate: Slot) -> int:
        """Runs of consecutive busy sequence ids if `candidate` were busy too (per-slot streams).

        llama.cpp splits a batch over per-slot streams into micro-batches of consecutive ids, so
        each extra run costs another pass over the weights in every decode step.
        """
        if self._model.settings.kv_unified:
            return 0
        busy = [s.busy or s is candidate for s in self._slots]
        return sum(1 for i, b in enumerate(busy) if b and (i == 0 or not busy[i - 1]))

    def _save(self, slot: Slot) -> None:
        if len(slot.cached) >= MIN_SAVED_TOKENS and self._saved.max_bytes > 0:
            self._saved.put(slot.cached, self._model.save_seq(slot.seq))
            self.stats.state_saves += 1

    def _prefill_budget(self, n_decoding: int) -> int:
        return self._pacer.budget(n_decoding, self._model.settings.n_batch - n_decoding)

    def _step(self) -> None:
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
        shares: dict[int, int] = {}  # seq -> prompt tokens queued this step, in admission order
        if pending:  # (a decode-only step skips the pacer)
            budget = self._prefill_budget(len(decoding_slots))
            for slot in sorted(pending, key=lambda s: s.order):
                if budget <= 0:
                    break
                n = self._prefill_take(slot, budget)
                if n > 0:
                    shares[slot.seq] = n
                    budget -= n
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
            reason = gen.accept(index)
            if reason is not None:
                self._finish(slot, reason)
        for part in prefills:
            slot = part.slot
            if slot.gen is not None and not slot.gen.prefilling:
                gen = slot.gen  # the whole prompt is in: sample the first token
                gen.timings.prompt_ms = (time.perf_counter() - gen.started) * 1e3
                reason = gen.accept(part.outputs[-1][0])
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
            return min(budget, len(gen.prompt) - gen.pos)
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
            lp, _ = log_softmax_at(row, target)
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
            )
        )
        job.index += 1
        job.token_lps = []
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
