"""Embeddings from llama.cpp's embedding mode: a second context on a model's weights.

The context has `embeddings` on and its own small KV cache, so embedding never touches the
generation slots' cache or their worker thread; the weights are shared (no second copy in
memory). Pooling is what the GGUF declares (`<arch>.pooling_type`): llama.cpp pools a sequence
inside one micro-batch (mean, CLS or last token), so with a declared pooling every input goes
into a decode whole. Decoder-only chat models declare none: they are mean-pooled here, over the
per-token hidden states of the last layer, which lets a long input span several decodes (llama.cpp
evaluates the LM head for every token of an embedding batch, so its logits buffer, n_vocab x the
batch's tokens, is what a large batch costs: 134 MB for Gemma 3's 262k vocabulary at 128 tokens).
Vectors are L2-normalised, as OpenAI's are.

Like llama.py, nothing here is thread-safe: one thread uses an embedder at a time.
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import llama_cpp
import numpy as np
import numpy.typing as npt

from edgellm.config import EmbeddingConfig
from edgellm.engine.engine import off_loop
from edgellm.engine.llama import LlamaError, LlamaWeights, default_threads
from edgellm.errors import (
    ContextLengthExceededError,
    EdgeLLMError,
    InvalidRequestError,
    OverloadedError,
)

Pooling = Literal["mean", "cls", "last"]
PoolingChoice = Literal["model", "mean", "cls", "last"]

_LLAMA_POOLING: dict[str, int] = {
    "mean": llama_cpp.LLAMA_POOLING_TYPE_MEAN,
    "cls": llama_cpp.LLAMA_POOLING_TYPE_CLS,
    "last": llama_cpp.LLAMA_POOLING_TYPE_LAST,
}
_GGUF_POOLING = {"0": "none", "1": "mean", "2": "cls", "3": "last", "4": "rank"}


class EmbeddingUnsupportedError(EdgeLLMError):
    """The model cannot give embeddings (a reranker's score head, say)."""


@dataclass(frozen=True, slots=True)
class EmbeddingSettings:
    """How a model's embedding context is made."""

    n_ctx: int = 512  # the most tokens one input may have
    n_batch: int = 128  # tokens per llama_decode when this module pools (decoder-only models)
    n_seq_max: int = 32  # inputs per llama_decode
    n_threads: int = 0  # 0 = one per CPU available to the process
    pooling: PoolingChoice = "model"  # "model": what the GGUF declares, mean if it declares none


def declared_pooling(weights: LlamaWeights) -> str:
    """The GGUF's `<arch>.pooling_type`: none, mean, cls, last or rank ("none" if absent)."""
    arch = weights.meta("general.architecture") or ""
    raw = weights.meta(f"{arch}.pooling_type")
    return _GGUF_POOLING.get(raw or "0", "none")


class LlamaEmbedder:
    """An embedding context on `weights`. `embed` turns token sequences into unit vectors."""

    def __init__(self, weights: LlamaWeights, settings: EmbeddingSettings) -> None:
        self.weights = weights
        self.settings = settings
        declared = declared_pooling(weights)
        if settings.pooling != "model":
            pooling: str = settings.pooling
        else:
            pooling = "mean" if declared == "none" else declared
        if pooling not in _LLAMA_POOLING:
            raise EmbeddingUnsupportedError(
                f"{weights.path.name} declares pooling '{pooling}' (a reranker's score, not an "
                "embedding)"
            )
        self.pooling: Pooling = pooling  # type: ignore[assignment]
        # Pooled here when the model declares none (a causal LM): inputs may span decodes.
        self.own_pooling = settings.pooling == "model" and declared == "none"
        window = settings.n_ctx
        if weights.n_ctx_train:
            window = min(window, weights.n_ctx_train)
        self.n_ctx = window
        self.n_embd = weights.n_embd
        self.n_batch = min(settings.n_batch, window) if self.own_pooling else window
        # llama.cpp's graph reservation for pooled embeddings splits n_ubatch tokens evenly over
        # n_seq_max sequences, and aborts when they do not divide it (17 of 512, say)
        self.n_seq_max = max(
            d for d in range(1, max(1, settings.n_seq_max) + 1) if self.n_batch % d == 0
        )
        threads = settings.n_threads or default_threads()
        self.n_threads = threads

        cparams = llama_cpp.llama_context_default_params()
        # own pooling: an input of up to n_ctx tokens still spanning decodes, plus one batch
        cparams.n_ctx = window + self.n_batch if self.own_pooling else window
        cparams.n_batch = self.n_batch
        cparams.n_ubatch = self.n_batch  # a pooled sequence must sit in one micro-batch
        cparams.n_seq_max = self.n_seq_max
        cparams.kv_unified = True
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        cparams.embeddings = True
        cparams.pooling_type = (
            llama_cpp.LLAMA_POOLING_TYPE_NONE if self.own_pooling else _LLAMA_POOLING[pooling]
        )
        ctx = llama_cpp.llama_init_from_model(weights.model, cparams)
        if not ctx:
            raise LlamaError(f"llama.cpp could not create an embedding context for {weights.path}")
        self._ctx = ctx
        self._mem = llama_cpp.llama_get_memory(ctx)
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self._closed = False

    def embed(
        self,
        inputs: Sequence[Sequence[int]],
        cancelled: Callable[[], bool] = lambda: False,
    ) -> npt.NDArray[np.float32]:
        """One L2-normalised row per input, shape (len(inputs), n_embd). Every input has 1 to
        n_ctx tokens of the vocabulary (checked here too: llama.cpp aborts on a bad id). Stops
        between decodes once `cancelled()` (the rows not computed are zeros)."""
        vocab = self.weights.n_vocab
        for tokens in inputs:
            if not 1 <= len(tokens) <= self.n_ctx:
                raise ValueError(f"an input has {len(tokens)} tokens, not 1..{self.n_ctx}")
            if any(not 0 <= t < vocab for t in tokens):
                raise ValueError("a token id is outside the vocabulary")
        out = np.zeros((len(inputs), self.n_embd), dtype=np.float32)
        if self.own_pooling:
            self._embed_own_mean(inputs, out, cancelled)
        else:
            self._embed_pooled(inputs, out, cancelled)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out

    # -- decoding ---------------------------------------------------------------------------

    def _decode(self, entries: list[tuple[int, int, int]]) -> None:
        """One llama_decode of (token, position, sequence) entries, every one an output."""
        b = self._batch
        for i, (token, pos, seq) in enumerate(entries):
            b.token[i] = token
            b.pos[i] = pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seq
            b.logits[i] = True
        b.n_tokens = len(entries)
        rc = int(llama_cpp.llama_decode(self._ctx, b))
        llama_cpp.llama_synchronize(self._ctx)
        if rc != 0:
            raise LlamaError(f"llama_decode failed with code {rc} ({len(entries)} tokens)")

    def _embed_pooled(
        self,
        inputs: Sequence[Sequence[int]],
        out: npt.NDArray[np.float32],
        cancelled: Callable[[], bool],
    ) -> None:
        """llama.cpp pools: whole inputs, several to a decode."""
        i = 0
        while i < len(inputs) and not cancelled():
            llama_cpp.llama_memory_clear(self._mem, True)
            entries: list[tuple[int, int, int]] = []
            rows: list[int] = []
            while (
                i < len(inputs)
                and len(rows) < self.n_seq_max
                and len(entries) + len(inputs[i]) <= self.n_batch
            ):
                seq = len(rows)
                entries.extend((t, pos, seq) for pos, t in enumerate(inputs[i]))
                rows.append(i)
                i += 1
            self._decode(entries)
            for seq, row in enumerate(rows):
                ptr = llama_cpp.llama_get_embeddings_seq(self._ctx, seq)
                if not ptr:
                    raise LlamaError(f"no pooled embedding for sequence {seq}")
                out[row] = np.ctypeslib.as_array(ptr, shape=(self.n_embd,))
        llama_cpp.llama_memory_clear(self._mem, True)

    def _embed_own_mean(
        self,
        inputs: Sequence[Sequence[int]],
        out: npt.NDArray[np.float32],
        cancelled: Callable[[], bool],
    ) -> None:
        """Mean of every token's last hidden state. Whole inputs are packed into decodes of up
        to n_batch tokens; only an input longer than n_batch is split, into n_batch-token
        chunks that each start a decode (its cells stay in the cache until it ends). An input
        is thus cut the same way whatever else is in the request, so its vector does not
        depend on its neighbours: llama.cpp's kernels round a sequence's states differently
        when its chunks differ (up to 5e-3 in a component of the unit vector)."""
        llama_cpp.llama_memory_clear(self._mem, True)
        seqs = list(range(self.n_seq_max - 1, -1, -1))  # free sequence ids
        sums = np.zeros((len(inputs), self.n_embd), dtype=np.float64)
        nxt = 0  # the next input not yet started
        carry: tuple[int, int, int] | None = None  # (row, sequence, next position) of a split
        while (nxt < len(inputs) or carry is not None) and not cancelled():
            entries: list[tuple[int, int, int]] = []
            spans: list[tuple[int, int, int, bool]] = []  # (row, first entry, n, finished)
            if carry is not None:
                row, seq, pos = carry
                take = min(self.n_batch, len(inputs[row]) - pos)
                entries.extend((inputs[row][p], p, seq) for p in range(pos, pos + take))
                done = pos + take == len(inputs[row])
                spans.append((row, 0, take, done))
                carry = None if done else (row, seq, pos + take)
            while carry is None and nxt < len(inputs) and seqs:
                tokens = inputs[nxt]
                room = self.n_batch - len(entries)
                if len(tokens) > room and (entries or len(tokens) <= self.n_batch):
                    break  # it goes whole into the next decode, or starts an empty one
                take = min(len(tokens), room)
                seq = seqs.pop()
                spans.append((nxt, len(entries), take, take == len(tokens)))
                entries.extend((t, p, seq) for p, t in enumerate(tokens[:take]))
                if take < len(tokens):
                    carry = (nxt, seq, take)
                nxt += 1
            self._decode(entries)
            ptr = llama_cpp.llama_get_embeddings(self._ctx)
            if not ptr:
                raise LlamaError("no token embeddings after an embedding decode")
            states = np.ctypeslib.as_array(
                ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)),
                shape=(len(entries), self.n_embd),
            )
            for row, first, n, finished in spans:
                sums[row] += states[first : first + n].sum(axis=0, dtype=np.float64)
                if finished:
                    seq = entries[first][2]
                    llama_cpp.llama_memory_seq_rm(self._mem, seq, -1, -1)
                    seqs.append(seq)
        lengths = np.array([len(t) for t in inputs], dtype=np.float64)
        out[:] = sums / lengths[:, None]
        llama_cpp.llama_memory_clear(self._mem, True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        llama_cpp.llama_batch_free(self._batch)
        llama_cpp.llama_free(self._ctx)


# -- the service the servers use: validation, tokenization, a worker thread -------------------

Truncate = Literal["end", "start"]  # which end of a too-long input is cut


@dataclass(frozen=True, slots=True)
class EmbeddingInfo:
    name: str
    path: Path
    n_embd: int
    n_ctx: int
    pooling: str
    n_threads: int


@dataclass(frozen=True, slots=True)
class EmbeddingResult:
    vectors: npt.NDArray[np.float32]  # one unit row per input
    n_tokens: int  # tokens embedded, after truncation
    truncated: tuple[int, ...]  # indices of the inputs that were cut to n_ctx tokens
    embed_ms: float  # on the worker thread, queue excluded


class EmbeddingEngine:
    """`/v1/embeddings` for one model: inputs are checked and tokenized on the caller's side,
    then embedded on a worker thread of their own, one request after another (a full queue is
    a 429). The generation scheduler, its thread and its KV cache are not involved; on a small
    CPU the two still share the cores."""

    def __init__(self, name: str, weights: LlamaWeights, config: EmbeddingConfig) -> None:
        self.name = name
        self.config = config
        self._weights = weights
        self._embedder = LlamaEmbedder(
            weights,
            EmbeddingSettings(
                n_ctx=config.n_ctx,
                n_batch=config.n_batch,
                n_seq_max=config.n_seq_max,
                n_threads=config.n_threads,
                pooling=config.pooling,
            ),
        )
        e = self._embedder
        self.info = EmbeddingInfo(name, weights.path, e.n_embd, e.n_ctx, e.pooling, e.n_threads)
        self._worker = ThreadPoolExecutor(1, thread_name_prefix=f"embed-{name}")
        self._lock = threading.Lock()  # the llama.cpp context: one caller at a time
        self._outstanding = 0  # requests queued or running (asyncio loop only)
        self._mean_ms = 50.0  # a request's recent embedding time, for Retry-After

    @property
    def n_embd(self) -> int:
        return self.info.n_embd

    @property
    def n_ctx(self) -> int:
        return self.info.n_ctx

    # -- inputs -----------------------------------------------------------------------------

    def prepare(
        self,
        inputs: Sequence[str] | Sequence[Sequence[int]],
        *,
        truncate: Truncate | None = None,
        param: str = "input",
    ) -> tuple[list[list[int]], tuple[int, ...]]:
        """The token sequences to embed and the indices of those cut to n_ctx tokens. Every
        value that reaches llama.cpp is checked: an empty input, a token id outside the
        vocabulary or (without `truncate`) an input over n_ctx tokens is a 400 naming it."""
        if not inputs:
            raise InvalidRequestError("input must not be empty", param=param)
        n_ctx, n_vocab = self.n_ctx, self._weights.n_vocab
        out: list[list[int]] = []
        cut: list[int] = []
        for i, item in enumerate(inputs):
            if isinstance(item, str):
                tokens = self._tokenize(item, i, truncate, param)
            else:
                tokens = [int(t) for t in cast(Sequence[int], item)]
                bad = [t for t in tokens if not 0 <= t < n_vocab]
                if bad:
                    raise InvalidRequestError(
                        f"input[{i}] has token ids outside the vocabulary (ids 0..{n_vocab - 1}): "
                        f"{bad[:5]}",
                        param=param,
                    )
            if not tokens:
                raise InvalidRequestError(f"input[{i}] is empty", param=param)
            if len(tokens) > n_ctx:
                if truncate is None:
                    raise ContextLengthExceededError(
                        f"input[{i}] has {len(tokens)} tokens; this model embeds at most "
                        f"{n_ctx} tokens per input (send shorter inputs, or truncate: true)",
                        param=param,
                    )
                tokens = tokens[:n_ctx] if truncate == "end" else tokens[-n_ctx:]
                cut.append(i)
            out.append(tokens)
        return out, tuple(cut)

    def _tokenize(self, text: str, i: int, truncate: Truncate | None, param: str) -> list[int]:
        if not text:
            raise InvalidRequestError(f"input[{i}] is an empty string", param=param)
        w = self._weights
        # No token stands for more than max_piece_bytes bytes (nor characters), so a text of
        # more characters than this holds more than n_ctx tokens: refused unread, or cut before
        # tokenizing (tokenizing megabytes costs seconds).
        room = (self.n_ctx + 8) * w.max_piece_bytes
        if len(text) > room:
            if truncate is None:
                raise ContextLengthExceededError(
                    f"input[{i}] has {len(text)} characters, more than the {self.n_ctx} tokens "
                    f"this model embeds per input can hold (send shorter inputs, or truncate: "
                    "true)",
                    param=param,
                )
            text = text[:room] if truncate == "end" else text[-room:]
        return w.tokenize(text, add_special=True, parse_special=False)

    # -- work -------------------------------------------------------------------------------

    def run(
        self, inputs: Sequence[Sequence[int]], cancelled: Callable[[], bool] = lambda: False
    ) -> npt.NDArray[np.float32]:
        """Embed prepared inputs now, on the calling thread (blocking)."""
        with self._lock:
            return self._embedder.embed(inputs, cancelled)

    async def embed(
        self,
        inputs: Sequence[str] | Sequence[Sequence[int]],
        *,
        truncate: Truncate | None = None,
    ) -> EmbeddingResult:
        """Check, tokenize and embed `inputs` on the worker thread. A caller that stops waiting
        (a client gone) stops the work at the next llama_decode."""
        if self._outstanding > self.config.max_queue:
            raise OverloadedError(
                f"{self._outstanding} embedding requests for {self.name} are waiting; retry later",
                retry_after=max(1.0, self._outstanding * self._mean_ms / 1e3),
            )
        stop = threading.Event()
        self._outstanding += 1  # from arrival: tokenizing a long input may take a while too
        try:
            size = sum(len(x) for x in inputs)
            tokens, cut = await off_loop(size, lambda: self.prepare(inputs, truncate=truncate))

            def work() -> tuple[npt.NDArray[np.float32], float]:
                t0 = time.perf_counter()
                vectors = self.run(tokens, stop.is_set)
                return vectors, (time.perf_counter() - t0) * 1e3

            future = asyncio.get_running_loop().run_in_executor(self._worker, work)
            vectors, ms = await future
        finally:
            stop.set()  # no-op when finished; stops the worker when the caller went away
            self._outstanding -= 1
        self._mean_ms = 0.8 * self._mean_ms + 0.2 * ms
        return EmbeddingResult(vectors, sum(map(len, tokens)), cut, ms)

    def close(self) -> None:
        self._worker.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            self._embedder.close()
