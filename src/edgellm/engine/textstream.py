"""Turns generated tokens into text safely: whole UTF-8 characters only, stop sequences removed.

Text that could be the start of a stop sequence is held back until it is known not to be one,
so a client never sees part of a stop string (llama-server does the same).
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field

from edgellm.engine.types import TokenLogprob


@dataclass(slots=True)
class Emission:
    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob]


@dataclass(slots=True)
class TextStream:
    stop: tuple[str, ...] = ()
    _decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )
    _pending_text: str = ""
    _pending_tokens: list[int] = field(default_factory=list)
    _pending_logprobs: list[TokenLogprob] = field(default_factory=list)
    stopped: bool = False

    def push(
        self, token: int, piece: bytes, logprob: TokenLogprob | None = None
    ) -> Emission | None:
        """Add one token; return what can be shown now (None if everything is held back)."""
        self._pending_tokens.append(token)
        if logprob is not None:
            self._pending_logprobs.append(logprob)
        self._pending_text += self._decoder.decode(piece)
        if not self.stop:
            return self._take(len(self._pending_text))
        hit = self._first_stop()
        if hit is not None:
            self.stopped = True
            return self._take(hit, keep_rest=False)
        return self._take(len(self._pending_text) - self._held_suffix_len())

    def flush(self) -> Emission | None:
        """End of generation: release held text (it was not a stop sequence after all), and
        held tokens that render as nothing (an end-of-generation token with its log-prob)."""
        if self.stopped:
            return None
        self._pending_text += self._decoder.decode(b"", final=True)
        return self._take(len(self._pending_text), keep_rest=False)

    def _first_stop(self) -> int | None:
        found = [i for s in self.stop if (i := self._pending_text.find(s)) >= 0]
        return min(found) if found else None

    def _held_suffix_len(self) -> int:
        text = self._pending_text
        longest = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(text)), longest, -1):
                if text.endswith(s[:n]):
                    longest = n
                    break
        return longest

    def _take(self, n_chars: int, *, keep_rest: bool = True) -> Emission | None:
        if n_chars <= 0 and keep_rest:
            return None
        text = self._pending_text[:n_chars]
        self._pending_text = self._pending_text[n_chars:] if keep_rest else ""
        if keep_rest and self._pending_text:
            # Tokens stay with the text they produced; held text keeps its last token.
            tokens, self._pending_tokens = self._pending_tokens[:-1], self._pending_tokens[-1:]
            lps, self._pending_logprobs = self._pending_logprobs[:-1], self._pending_logprobs[-1:]
        else:
            tokens, self._pending_tokens = self._pending_tokens, []
            lps, self._pending_logprobs = self._pending_logprobs, []
        if not text and not tokens:
            return None
        return Emission(text=text, token_ids=tokens, logprobs=lps)
