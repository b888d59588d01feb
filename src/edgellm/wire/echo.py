"""A text completion's `echo`: the prompt repeated before the answer and, when the request asks
for log-probs, every prompt token with its log-prob given the tokens before it (OpenAI's legacy
completions and vLLM do this; lm-evaluation-harness's `local-completions` model scores every
log-likelihood task with it).

The first prompt token has no log-prob (nothing precedes it): its `logprob` is NaN and it has no
alternatives, and the answer writes both as null, as OpenAI does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from edgellm.engine.types import TokenLogprob


@dataclass(slots=True)
class Echo:
    """What goes before a text completion's answer. `logprobs` is filled by the backend: the
    engine's scores, or an upstream's, read from its first chunk before the first event."""

    text: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)


def unscored(lp: TokenLogprob) -> bool:
    """Whether `lp` is a prompt's first token (no log-prob, written as null)."""
    return math.isnan(lp.logprob)


def split(
    lps: Sequence[TokenLogprob], offsets: Sequence[object] | None, n_chars: int
) -> tuple[list[TokenLogprob], list[TokenLogprob]]:
    """An upstream's log-probs of a choice whose text starts with an echoed prompt of `n_chars`
    characters: (the prompt's, the answer's). By `text_offset` when the upstream sent it (each
    entry at an offset inside the prompt is the prompt's), else by the tokens' text lengths."""
    cut = 0
    pos = 0
    for i, lp in enumerate(lps):
        at = offsets[i] if offsets is not None and i < len(offsets) else pos
        if not isinstance(at, int) or at >= n_chars:
            break
        cut = i + 1
        pos += len(lp.token)
    return list(lps[:cut]), list(lps[cut:])
