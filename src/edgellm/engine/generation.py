"""One generation in progress: sampling, log-probs, text, stop conditions and the final event.

Every slot of the scheduler runs its request through this one class, whatever `--parallel` is.
"""

from __future__ import annotations

import random
import time

from edgellm.engine.jobs import GenerationJob
from edgellm.engine.llama import LlamaModel
from edgellm.engine.logprobs import token_logprob
from edgellm.engine.penalties import Penalties
from edgellm.engine.textstream import Emission, TextStream
from edgellm.engine.types import Finished, FinishReason, TextDelta, Timings


class ActiveGeneration:
    """Holds a job's sampler and text stream; `accept` handles one sampled token."""

    def __init__(self, job: GenerationJob, model: LlamaModel, n_reused: int) -> None:
        self.job = job
        self.model = model
        req = job.request
        self.prompt = req.prompt_tokens
        self.pos = n_reused  # next position to evaluate
        now = time.perf_counter()
        self.started = now
        self.timings = Timings(
            queue_ms=(now - job.admitted_at) * 1e3,
            cache_n=n_reused,
            prompt_n=len(self.prompt) - n_reused,
        )
        s = req.sampling
        seed = s.seed if s.seed is not None else random.getrandbits(32)
        self.sampler = model.new_sampler(
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            min_p=s.min_p,
            seed=seed,
            logit_bias=s.logit_bias,
            grammar=s.grammar,
            penalties=Penalties(s.penalties, self.prompt) if s.penalties.active else None,
        )
        self.stream = TextStream(stop=req.stop)
        self.n_gen = 0
        self.next_token = -1  # the last sampled token, to be evaluated next
        self.first_token_at = 0.0

    @property
    def prefilling(self) -> bool:
        return self.pos < len(self.prompt)

    def accept(self, index: int) -> FinishReason | None:
        """Sample from output `index`, stream its text; a reason if the generation ends here."""
        model, req = self.model, self.job.request
        if req.max_tokens == 0:  # the prompt alone (echo, its log-probs): nothing is sampled
            return FinishReason.LENGTH
        token = self.sampler.sample(index)
        self.n_gen += 1
        if self.n_gen == 1:
            self.first_token_at = time.perf_counter()
            self.timings.ttft_ms = (self.first_token_at - self.job.admitted_at) * 1e3
        if model.is_eog(token) and not req.ignore_eos:
            if req.logprobs and req.eog_logprob:  # renders as nothing; `finish` flushes it
                end = token_logprob(model.logits(index), token, req.top_logprobs, model.token_bytes)
                self.stream.push(token, b"", end)
            return FinishReason.STOP
        lp = (
            token_logprob(model.logits(index), token, req.top_logprobs, model.token_bytes)
            if req.logprobs
            else None
        )
        emission = self.stream.push(token, model.token_bytes(token), lp)
        if emission is not None:
            self.job.sink(_delta(emission))
        if self.stream.stopped:
            return FinishReason.STOP
        if self.n_gen >= req.max_tokens or self.pos >= model.n_ctx:
            return FinishReason.LENGTH
        if self.job.cancelled.is_set():
            return FinishReason.CANCELLED
        self.next_token = token
        return None

    def finish(self, reason: FinishReason) -> None:
        """Flush held text, close the sampler and send the final event."""
        tail = self.stream.flush() if reason is not FinishReason.CANCELLED else None
        if tail is not None:
            self.job.sink(_delta(tail))
        self.sampler.close()
        self.timings.predicted_n = self.n_gen
        self.timings.total_ms = (time.perf_counter() - self.job.admitted_at) * 1e3
        self.job.sink(
            Finished(
                reason=reason,
                prompt_tokens=len(self.prompt),
                completion_tokens=self.n_gen,
                timings=self.timings,
            )
        )


def _delta(e: Emission) -> TextDelta:
    return TextDelta(text=e.text, token_ids=tuple(e.token_ids), logprobs=tuple(e.logprobs))
