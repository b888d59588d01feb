"""Log-probabilities from one logits row, without materializing logits for the whole context."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from edgellm.engine.types import TokenLogprob, TopLogprob


def log_softmax_at(logits: npt.NDArray[np.float32], token: int) -> tuple[float, float]:
    """(log-prob of `token`, log-sum-exp) under softmax(logits), computed in float64."""
    row = logits.astype(np.float64, copy=False)
    peak = float(row.max())
    lse = peak + float(np.log(np.exp(row - peak).sum()))
    return float(row[token]) - lse, lse


def token_logprob(
    logits: npt.NDArray[np.float32],
    token: int,
    top_k: int,
    token_bytes: Callable[[int], bytes],
) -> TokenLogprob:
    """The chosen token's log-prob and the `top_k` most likely tokens, most likely first."""
    lp, lse = log_softmax_at(logits, token)
    top: tuple[TopLogprob, ...] = ()
    if top_k > 0:
        k = min(top_k, logits.shape[0])
        idx = np.argpartition(logits, -k)[-k:]
        idx = idx[np.argsort(-logits[idx], kind="stable")]
        top = tuple(
            TopLogprob(
                token=_text(token_bytes(int(i))),
                token_id=int(i),
                logprob=float(logits[i]) - lse,
                bytes=token_bytes(int(i)),
            )
            for i in idx
        )
    piece = token_bytes(token)
    return TokenLogprob(token=_text(piece), token_id=token, logprob=lp, bytes=piece, top=top)


def _text(piece: bytes) -> str:
    return piece.decode("utf-8", errors="replace")
