"""Tokenizers for building exact-length prompts: the server's (`/tokenize`, `/detokenize`, as
EdgeLLM and llama-server offer), else the model file's own vocabulary loaded locally."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx


class ServerTextTokenizer:
    def __init__(self, client: httpx.Client, model: str) -> None:
        self.client = client
        self.model = model

    def tokenize(self, text: str) -> list[int]:
        return self._tokenize(text, add_special=False)

    def _tokenize(self, text: str, *, add_special: bool) -> list[int]:
        response = self.client.post(
            "/tokenize", json={"content": text, "add_special": add_special, "model": self.model}
        )
        response.raise_for_status()
        return [int(t) for t in response.json()["tokens"]]

    def added_special_tokens(self) -> int:
        # a server that ignores `add_special` answers the same both ways: 0, as it should be
        with_special = self._tokenize("hello", add_special=True)
        return max(0, len(with_special) - len(self.tokenize("hello")))

    def detokenize(self, tokens: list[int]) -> str:
        response = self.client.post("/detokenize", json={"tokens": tokens, "model": self.model})
        response.raise_for_status()
        return str(response.json()["content"])

    def available(self) -> bool:
        try:
            return bool(self.tokenize("hello"))
        except (httpx.HTTPError, KeyError, ValueError):
            return False


class LocalTokenizer:
    """The GGUF's vocabulary only (no weights), through llama-cpp-python."""

    def __init__(self, path: Path) -> None:
        import llama_cpp

        self._llm: Any = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)

    def tokenize(self, text: str) -> list[int]:
        return [int(t) for t in self._llm.tokenize(text.encode(), add_bos=False, special=False)]

    def added_special_tokens(self) -> int:
        plain = self._llm.tokenize(b"hello", add_bos=False, special=False)
        return max(0, len(self._llm.tokenize(b"hello", add_bos=True, special=False)) - len(plain))

    def detokenize(self, tokens: list[int]) -> str:
        return str(self._llm.detokenize(tokens).decode("utf-8", errors="replace"))
