"""Repetition penalties: OpenAI's presence and frequency penalties, llama.cpp's repeat penalty.

- `presence_penalty` and `frequency_penalty` (OpenAI, -2..2) lower the logit of every token
  already generated in this answer by `presence` once plus `frequency` per occurrence, as
  OpenAI's documentation gives the formula. They count the answer's tokens only, not the
  prompt's (vLLM does the same), so a long chat history does not push the model off the words
  of the conversation.
- `repeat_penalty` (llama.cpp's, > 0, 1 = off) divides a positive logit and multiplies a
  negative one for every distinct token among the last `repeat_last_n` tokens of prompt and
  answer together, as llama.cpp's penalties sampler does.

The penalties act on a copy of the logits row before any other sampling step (logit bias, the
grammar, top-k/top-p/min-p, temperature), for greedy and sampled decoding alike. Log-probs
reported to the client stay the model's own, as they are without penalties.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edgellm.errors import InvalidRequestError

# The repeat penalty divides logits: below this a float32 logit overflows to infinity, the
# softmax turns to NaN and the sampler's draw is no longer a draw from the allowed tokens.
MIN_REPEAT_PENALTY = 0.01
MAX_REPEAT_PENALTY = 10.0
MAX_PRESENCE_FREQUENCY = 2.0  # OpenAI's bound, either sign


@dataclass(frozen=True, slots=True)
class PenaltySettings:
    presence: float = 0.0
    frequency: float = 0.0
    repeat: float = 1.0
    repeat_last_n: int = 64  # prompt + answer tokens the repeat penalty sees (-1: all of them)

    def check(self) -> None:
        """Refuse values whose penalised logits would not stay finite (400 naming the field)."""
        for name, value in (
            ("presence_penalty", self.presence),
            ("frequency_penalty", self.frequency),
        ):
            if not (math.isfinite(value) and abs(value) <= MAX_PRESENCE_FREQUENCY):
                raise InvalidRequestError(f"{name} must be within [-2, 2], got {value}", param=name)
        if not MIN_REPEAT_PENALTY <= self.repeat <= MAX_REPEAT_PENALTY:
            raise InvalidRequestError(
                f"repeat_penalty must be within [{MIN_REPEAT_PENALTY}, {MAX_REPEAT_PENALTY}], "
                f"got {self.repeat}",
                param="repeat_penalty",
            )
        if self.repeat_last_n < -1:
            raise InvalidRequestError(
                f"repeat_last_n must be -1 or more, got {self.repeat_last_n}",
                param="repeat_last_n",
            )

    @property
    def active(self) -> bool:
        return (
            self.presence != 0.0
            or self.frequency != 0.0
            or (self.repeat != 1.0 and self.repeat_last_n != 0)
        )


class Penalties:
    """The penalty state of one generation: what it produced, and the recent window."""

    def __init__(self, settings: PenaltySettings, prompt: Sequence[int]) -> None:
        self.settings = settings
        self._generated: Counter[int] = Counter()
        n = settings.repeat_last_n
        self._tracks_window = settings.repeat != 1.0 and n != 0
        if n < 0:
            self._window: deque[int] = deque(prompt)
        else:
            self._window = deque(prompt[-n:] if n > 0 else (), maxlen=n)

    def accept(self, token: int) -> None:
        self._generated[token] += 1
        if self._tracks_window:
            self._window.append(token)

    def apply(self, row: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """A penalised copy of a logits row."""
        out = row.copy()
        s = self.settings
        if self._tracks_window and self._window:
            ids = np.fromiter(set(self._window), dtype=np.intp)
            values = out[ids]
            out[ids] = np.where(values > 0, values / s.repeat, values * s.repeat)
        if (s.presence or s.frequency) and self._generated:
            ids = np.fromiter(self._generated.keys(), dtype=np.intp)
            counts = np.fromiter(self._generated.values(), dtype=np.float32)
            out[ids] -= np.float32(s.frequency) * counts + np.float32(s.presence)
        return out
