"""Prompt embeddings from a local GGUF model, as optional features of the `learned` router.

The hidden states of a small model's last layer, mean-pooled over the prompt and L2-normalised
(llama.cpp's embedding mode through `llama_cpp.Llama`). A causal LM is not a trained sentence
encoder, but its states say more about a prompt's topic and difficulty than word n-grams, and the
bundled 135M model embeds a short prompt in tens of milliseconds on a Pi-class CPU. Prompts longer
than the embedding context keep their last tokens: the question usually comes last (after a
passage, a document, earlier turns).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgellm.errors import EdgeLLMError


class PromptEmbedder:
    """Embeds prompts with the GGUF model `model` (a catalog name, a path or a hub reference)."""

    def __init__(self, model: str, *, n_ctx: int = 512, threads: int = 2) -> None:
        import llama_cpp

        from edgellm.models import resolve_model

        self.model = model
        self.n_ctx = n_ctx
        path = resolve_model(model).path
        try:
            self._llama: Any = llama_cpp.Llama(
                str(path),
                embedding=True,
                pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                n_ctx=n_ctx,
                n_batch=n_ctx,
                n_ubatch=n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise EdgeLLMError(f"cannot load embedding model {model}: {exc}") from exc
        self.dim = int(self._llama.n_embd())
        self._lock = threading.Lock()  # one llama.cpp context: one caller at a time

    def embed(self, texts: Sequence[str]) -> NDArray[np.float64]:
        """One L2-normalised row per text, shape (len(texts), dim)."""
        if not texts:
            return np.zeros((0, self.dim))
        with self._lock:
            rows = self._llama.embed([self._tail(t) for t in texts], normalize=True)
        return np.asarray(rows, dtype=np.float64).reshape(len(texts), self.dim)

    def _tail(self, text: str) -> str:
        room = self.n_ctx - 2  # the BOS token, and a token the re-tokenised cut may gain
        tokens = self._llama.tokenize(text.encode(), add_bos=False, special=False)
        if len(tokens) <= room:
            return text
        tail: bytes = self._llama.detokenize(tokens[-room:])
        return tail.decode(errors="ignore")

    def spec(self) -> dict[str, Any]:
        """What a saved router model records to rebuild this embedder."""
        return {"model": self.model, "n_ctx": self.n_ctx, "dim": self.dim}

    def close(self) -> None:
        self._llama.close()
