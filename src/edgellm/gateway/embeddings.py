"""Prompt embeddings from a local GGUF model, as optional features of the `learned` router.

The engine's embedding engine (`engine/embedding.py`, the same one `/v1/embeddings` uses): the
hidden states of a small model's last layer, mean-pooled over the prompt and L2-normalised. A
causal LM is not a trained sentence encoder, but its states say more about a prompt's topic and
difficulty than word n-grams, and the bundled 135M model embeds a short prompt in tens of
milliseconds on a Pi-class CPU. Prompts longer than the embedding window keep their last
tokens: the question usually comes last (after a passage, a document, earlier turns).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgellm.config import EmbeddingConfig
from edgellm.engine.embedding import EmbeddingEngine
from edgellm.engine.llama import LlamaWeights
from edgellm.errors import EdgeLLMError


class PromptEmbedder:
    """Embeds prompts with the GGUF model `model` (a catalog name, a path or a hub reference)."""

    def __init__(self, model: str, *, n_ctx: int = 512, threads: int = 2) -> None:
        from edgellm.models import resolve_model

        self.model = model
        self.n_ctx = n_ctx
        path = resolve_model(model).path
        self._weights = LlamaWeights(path)
        try:
            self._engine = EmbeddingEngine(
                model,
                self._weights,
                EmbeddingConfig(n_ctx=n_ctx, n_batch=min(n_ctx, 128), n_threads=threads),
            )
        except EdgeLLMError as exc:
            self._weights.close()
            raise EdgeLLMError(f"cannot load embedding model {model}: {exc.message}") from exc
        self.dim = self._engine.n_embd

    def embed(self, texts: Sequence[str]) -> NDArray[np.float64]:
        """One L2-normalised row per text, shape (len(texts), dim); blocking (call it off the
        event loop)."""
        if not texts:
            return np.zeros((0, self.dim))
        # an empty prompt still has a vector: the model's state after its first token
        tokens, _ = self._engine.prepare([t or " " for t in texts], truncate="start")
        return self._engine.run(tokens).astype(np.float64)

    def spec(self) -> dict[str, Any]:
        """What a saved router model records to rebuild this embedder."""
        return {"model": self.model, "n_ctx": self.n_ctx, "dim": self.dim}

    def close(self) -> None:
        self._engine.close()
        self._weights.close()
