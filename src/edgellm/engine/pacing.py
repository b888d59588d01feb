"""How many prompt tokens to put into a step while other slots are decoding (chunked prefill).

A long prompt joining running streams is prefilled a chunk per step; the chunk is sized so that a
mixed step takes about (1 + PREFILL_SHARE) decode steps, which keeps the running streams'
inter-token latency within about twice its median. Both costs are measured on the fly:

- the duration of decode-only steps (median of the last 32);
- the marginal cost of a prompt token in a mixed step (what the step took beyond a decode-only
  step, per prompt token), raised at once by a higher sample and lowered by a moving average,
  floored at half the per-token cost of pure prefill steps: on a shared machine one mixed step
  can come out as fast as a decode-only one, and a near-zero estimate would otherwise size the
  next chunk at the whole batch;
- and the chunk may at most double from one mixed step to the next (slow start), so that one bad
  estimate cannot stall the streams for a whole batch of prompt tokens.

With nobody decoding, a prompt is prefilled at full speed: the whole batch per step when no other
request is expected to join (every slot busy, one slot, or a node that has not served two
requests side by side for a while: the scheduler decides), otherwise in steps of about
`JOINABLE_STEP_S`, so that a request arriving meanwhile waits about that long for the step to
end rather than for a whole batch (512 prompt tokens are seconds on one core of a small CPU).
That matters most in multi-turn chat: a client sends its next turn as soon as its answer ends,
which is just when the node turns to a prompt it was prefilling beside that answer, so the turn
waits for most of a step. A step is not cut below the chunk where prefill speed starts to drop,
about `JOINABLE_TOKENS_PER_THREAD` tokens per thread (a 512-token prompt in chunks of 32, 64,
128 and 512 through this engine on the 2-vCPU EPYC guest: SmolLM2 on one thread 137, 162, 155,
157 tok/s; on two 251, 276, 292, 298; Gemma 3 on two 550, 642, 736, 712 with 256: 732).
"""

from __future__ import annotations

import statistics
from collections import deque

PREFILL_SHARE = 1.0
FIRST_CHUNK = 16  # prompt tokens in the first mixed step, before both costs are measured
MIN_PURE_PREFILL = 8  # pure prefill steps shorter than this are too noisy to learn from
JOINABLE_STEP_S = 0.25  # a prefill-only step's target length while another request may join
JOINABLE_TOKENS_PER_THREAD = 64  # its floor (and its chunk before a prompt token's cost is known)


class PrefillPacer:
    """Sizes prefill chunks from measured step costs; `budget` then `record` once per step."""

    def __init__(self, fixed_chunk: int = 0, *, threads: int = 1) -> None:
        self.fixed_chunk = fixed_chunk  # > 0: always this many (no adaptation)
        self.joinable_floor = JOINABLE_TOKENS_PER_THREAD * max(1, threads)
        self._step_times: deque[float] = deque(maxlen=32)  # decode-only step durations
        self._mixed_cost = 0.0  # seconds per prompt token in a mixed step (moving average)
        self._pure_cost = 0.0  # seconds per prompt token in a prefill-only step
        self._cap = FIRST_CHUNK  # slow start: the largest chunk allowed next

    def budget(self, n_decoding: int, room: int, *, joinable: bool = False) -> int:
        """Prompt tokens allowed in the next step, given the decoding slots and batch room;
        `joinable`: a free slot could take a request that arrives during the step."""
        if n_decoding == 0:
            if not joinable or self.fixed_chunk:
                return room  # nobody is waiting for a token: prefill at full speed
            if self._pure_cost <= 0:
                return min(room, self.joinable_floor)
            return min(room, max(self.joinable_floor, int(JOINABLE_STEP_S / self._pure_cost)))
        if self.fixed_chunk:
            return min(room, self.fixed_chunk)
        cost = max(self._mixed_cost, 0.5 * self._pure_cost)
        if not self._step_times or cost <= 0:
            return max(1, min(room, FIRST_CHUNK // 4))
        step = statistics.median(self._step_times)
        return max(1, min(room, self._cap, int(PREFILL_SHARE * step / cost)))

    def record(self, n_decoding: int, n_prefill: int, elapsed: float) -> None:
        """Learn from a finished step of `n_decoding` decode and `n_prefill` prompt tokens."""
        if n_prefill == 0:
            self._step_times.append(elapsed)
            return
        if n_decoding == 0:
            if n_prefill >= MIN_PURE_PREFILL:
                sample = elapsed / n_prefill
                old = self._pure_cost
                self._pure_cost = sample if old <= 0 else 0.7 * old + 0.3 * sample
            return
        self._cap = max(FIRST_CHUNK, 2 * n_prefill)
        if not self._step_times:
            return
        sample = max(elapsed - statistics.median(self._step_times), 0.0) / n_prefill
        sample = max(sample, 0.5 * self._pure_cost)
        old = self._mixed_cost
        # Up at once, down slowly: a joining prompt's tokens cost more the deeper they sit (they
        # attend over everything before them), so an average would trail the real cost.
        self._mixed_cost = sample if sample > old else 0.7 * old + 0.3 * sample

    @property
    def decode_step_s(self) -> float:
        return statistics.median(self._step_times) if self._step_times else 0.0
