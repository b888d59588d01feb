"""A thin owner of one llama.cpp model and context, through llama-cpp-python's C bindings.

We use the low-level API (`llama_decode`, samplers, memory operations) instead of
`llama_cpp.Llama`: its generation loop re-detokenizes the whole completion on every streamed token
and copies the full logits row into numpy, which costs a third of the decode speed on a Pi-class
CPU. Everything here runs on the engine's worker thread; nothing in this module is thread-safe.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
import numpy.typing as npt

from edgellm.engine.penalties import Penalties
from edgellm.engine.types import GREEDY_BELOW
from edgellm.errors import EdgeLLMError, InvalidRequestError, ModelNotFoundError

log = logging.getLogger(__name__)

# llama.cpp logs every load step; route its messages to Python logging ("llama.cpp" logger, warnings
# and up by default, EDGELLM_LLAMA_LOG=debug for everything). llama-cpp-python's own callback maps
# ggml's log levels off by one and prints info lines as warnings.
_GGML_LEVELS = {1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}
_llama_log = logging.getLogger("llama.cpp")
_llama_log.setLevel(os.environ.get("EDGELLM_LLAMA_LOG", "warning").upper())
_last_level = logging.DEBUG
# llama.cpp reports why it refused a grammar only in its log: a thread that is compiling one
# collects the error lines logged meanwhile (see `_llama_errors`).
_captured = threading.local()


@llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
def _route_llama_log(level: int, text: bytes, _: ctypes.c_void_p) -> None:
    global _last_level
    py_level = _GGML_LEVELS.get(level, _last_level)  # 5 = continuation of the previous line
    _last_level = py_level
    errors: list[str] | None = getattr(_captured, "errors", None)
    if errors is not None and py_level >= logging.ERROR:
        errors.append(text.decode("utf-8", errors="replace"))
        return
    if _llama_log.isEnabledFor(py_level):
        message = text.decode("utf-8", errors="replace").rstrip()
        if message:
            _llama_log.log(py_level, message)


@contextlib.contextmanager
def _llama_errors() -> Iterator[list[str]]:
    """Collect the error lines llama.cpp logs on this thread inside the block."""
    errors: list[str] = []
    _captured.errors = errors
    try:
        yield errors
    finally:
        _captured.errors = None


llama_cpp.llama_log_set(_route_llama_log, ctypes.c_void_p(0))

_backend_lock = threading.Lock()
_backend_ready = False


def _init_backend() -> None:
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            llama_cpp.llama_backend_init()
            _backend_ready = True


class LlamaError(EdgeLLMError):
    """llama.cpp refused an operation (for example, no KV slot left for a batch)."""


class GrammarError(InvalidRequestError):
    """llama.cpp refused a grammar (its parser's reason is in the message)."""


class GrammarDeadEndError(InvalidRequestError):
    """No token of the vocabulary can continue the text under the request's grammar."""


@dataclass(frozen=True, slots=True)
class LlamaSettings:
    """How to load a model. Defaults match upstream `llama-bench` so benchmarks compare."""

    n_ctx: int = 8192
    n_threads: int = 0  # 0 = one per physical core available to the process
    n_batch: int = 512
    n_ubatch: int = 512
    flash_attn: bool | None = None  # None = llama.cpp decides (auto)
    use_mmap: bool = True
    n_seq_max: int = 1  # sequences (slots) in the KV cache
    # True: one cache of n_ctx cells shared by all sequences. False: each sequence has its own
    # cache of n_ctx cells (llama-server's default), so a lone stream never attends over the
    # cells of other sequences' idle caches.
    kv_unified: bool = False


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True, slots=True)
class PerfCounters:
    """A snapshot of llama.cpp's own per-context counters (`llama_perf_context`)."""

    prompt_eval_ms: float
    eval_ms: float
    n_prompt_eval: int
    n_eval: int

    @property
    def total_ms(self) -> float:
        return self.prompt_eval_ms + self.eval_ms

    @property
    def total_tokens(self) -> int:
        return self.n_prompt_eval + self.n_eval


class LlamaWeights:
    """One loaded GGUF model (weights and vocabulary) without a context: what tokenizing needs,
    and what every context of the model (generation, embeddings) shares."""

    def __init__(self, path: Path, *, use_mmap: bool = True) -> None:
        if not path.is_file():
            raise ModelNotFoundError(f"model file not found: {path}")
        _init_backend()
        self.path = path
        mparams = llama_cpp.llama_model_default_params()
        mparams.use_mmap = use_mmap
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), mparams)
        if not model:
            raise LlamaError(f"llama.cpp could not load {path}")
        self._model = model
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        self.n_ctx_train = int(llama_cpp.llama_model_n_ctx_train(model))
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self.n_embd = int(llama_cpp.llama_model_n_embd_out(model))
        self._piece_buf = ctypes.create_string_buffer(256)
        self._pieces: dict[int, bytes] = {}
        self._closed = False
        self.bos_id = int(llama_cpp.llama_vocab_bos(self._vocab))
        self.eos_id = int(llama_cpp.llama_vocab_eos(self._vocab))
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        # no text longer than n_ctx times this can fit in the context window
        self.max_piece_bytes = self._max_piece_bytes()

    # -- metadata ---------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(64 * 1024)
        n = llama_cpp.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        if n < 0:
            return None
        return buf.value.decode("utf-8", errors="replace")

    def chat_template(self) -> str | None:
        raw = llama_cpp.llama_model_chat_template(self._model, None)
        return raw.decode("utf-8") if raw else None

    # -- tokens -----------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        data = text.encode("utf-8")
        capacity = len(data) + 8
        buf = (llama_cpp.llama_token * capacity)()
        n = llama_cpp.llama_tokenize(
            self._vocab, data, len(data), buf, capacity, add_special, parse_special
        )
        if n < 0:  # pragma: no cover - capacity is always enough for byte-level vocabularies
            capacity = -n
            buf = (llama_cpp.llama_token * capacity)()
            n = llama_cpp.llama_tokenize(
                self._vocab, data, len(data), buf, capacity, add_special, parse_special
            )
        return list(buf[:n])

    def token_bytes(self, token: int) -> bytes:
        """The bytes a token renders to (control tokens render to nothing)."""
        piece = self._pieces.get(token)
        if piece is None:
            if not 0 <= token < self.n_vocab:  # llama.cpp would throw std::out_of_range: abort
                raise ValueError(f"token id {token} is outside the vocabulary")
            n = llama_cpp.llama_token_to_piece(
                self._vocab, token, self._piece_buf, len(self._piece_buf), 0, False
            )
            if n < 0:  # pragma: no cover - pieces longer than 256 bytes
                buf = ctypes.create_string_buffer(-n)
                n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, -n, 0, False)
                piece = buf.raw[:n]
            else:
                piece = self._piece_buf.raw[:n]
            self._pieces[token] = piece
        return piece

    def _max_piece_bytes(self) -> int:
        """The longest text one token stands for (a scan of the vocabulary: 0.1 s for 49k
        tokens, 0.6 s for 262k on a 2-vCPU VM)."""
        buf = ctypes.create_string_buffer(1024)
        to_piece, vocab = llama_cpp.llama_token_to_piece, self._vocab
        longest = max(to_piece(vocab, t, buf, len(buf), 0, False) for t in range(self.n_vocab))
        return max(1, int(longest))

    def special_text(self, token: int) -> str:
        """How a control token (BOS, EOS) is spelled, for chat templates that print it."""
        buf = ctypes.create_string_buffer(256)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, True)
        return buf.raw[: max(n, 0)].decode("utf-8", errors="replace")

    def detokenize(self, tokens: list[int]) -> str:
        return b"".join(self.token_bytes(t) for t in tokens).decode("utf-8", errors="replace")

    def is_eog(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))

    @property
    def vocab(self) -> Any:
        return self._vocab

    @property
    def model(self) -> Any:
        """The llama_model pointer, for the contexts that share these weights."""
        return self._model

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        llama_cpp.llama_model_free(self._model)

    def __del__(self) -> None:  # pragma: no cover - best effort at interpreter exit
        with contextlib.suppress(Exception):
            self.close()


class LlamaModel(LlamaWeights):
    """One loaded GGUF model with one generation context (KV cache) and a reusable decode
    batch."""

    def __init__(self, path: Path, settings: LlamaSettings) -> None:
        super().__init__(path, use_mmap=settings.use_mmap)
        self.settings = settings
        model = self._model
        threads = settings.n_threads or default_threads()

        cparams = llama_cpp.llama_context_default_params()
        window = min(settings.n_ctx, self.n_ctx_train) if self.n_ctx_train else settings.n_ctx
        cparams.n_ctx = window if settings.kv_unified else window * settings.n_seq_max
        cparams.n_batch = settings.n_batch
        cparams.n_ubatch = min(settings.n_ubatch, settings.n_batch)
        cparams.n_seq_max = settings.n_seq_max
        cparams.kv_unified = settings.kv_unified or settings.n_seq_max == 1
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        cparams.no_perf = False
        # A full-size sliding-window cache lets us keep a conversation's prefix and cut it at any
        # position (Gemma 3 uses SWA); it costs little memory at edge context sizes.
        cparams.swa_full = True
        if settings.flash_attn is not None:
            cparams.flash_attn_type = (
                llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
                if settings.flash_attn
                else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
            )
        ctx = llama_cpp.llama_init_from_model(model, cparams)
        if not ctx:
            super().close()
            raise LlamaError(f"llama.cpp could not create a context for {path}")
        self._ctx = ctx
        self._mem = llama_cpp.llama_get_memory(ctx)
        self.n_ctx = int(llama_cpp.llama_n_ctx_seq(ctx))  # the window of one sequence
        self.kv_cells = int(llama_cpp.llama_n_ctx(ctx))  # all sequences together
        self.n_threads = threads
        self.n_seq_max = settings.n_seq_max
        self._batch = llama_cpp.llama_batch_init(settings.n_batch, 0, 1)
        self._batch_len = 0

    # -- KV cache ---------------------------------------------------------------------------

    def truncate_cache(self, n_keep: int, seq: int = 0) -> bool:
        """Drop cached positions >= n_keep of `seq`; False if llama.cpp cannot cut there."""
        if n_keep <= 0:
            self.clear_seq(seq)
            return True
        if not llama_cpp.llama_memory_seq_rm(self._mem, seq, n_keep, -1):
            return False
        # With a sliding-window cache, positions before the window may already be gone.
        return int(llama_cpp.llama_memory_seq_pos_min(self._mem, seq)) <= 0

    def clear_seq(self, seq: int) -> None:
        llama_cpp.llama_memory_seq_rm(self._mem, seq, -1, -1)

    def clear_cache(self) -> None:
        llama_cpp.llama_memory_clear(self._mem, True)

    def save_seq(self, seq: int) -> bytearray:
        """A copy of one sequence's KV state, to restore later into any sequence."""
        size = int(llama_cpp.llama_state_seq_get_size(self._ctx, seq))
        state = bytearray(size)
        view = (ctypes.c_uint8 * size).from_buffer(state)  # llama.cpp writes into it: one copy
        written = int(llama_cpp.llama_state_seq_get_data(self._ctx, view, size, seq))
        del view  # release the export so the bytearray may be resized
        del state[written:]
        return state

    def restore_seq(self, seq: int, state: bytearray) -> bool:
        view = (ctypes.c_uint8 * len(state)).from_buffer(state)  # no copy
        return int(llama_cpp.llama_state_seq_set_data(self._ctx, view, len(state), seq)) > 0

    # -- evaluation -------------------------------------------------------------------------

    def batch_clear(self) -> None:
        self._batch_len = 0

    def batch_add(self, token: int, pos: int, seq: int, *, logits: bool) -> int:
        """Append one token to the pending batch; returns its index (for logits/sampling)."""
        i = self._batch_len
        if i >= self.settings.n_batch:
            raise ValueError(f"the batch holds at most {self.settings.n_batch} tokens")
        b = self._batch
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq
        b.logits[i] = logits
        self._batch_len = i + 1
        return i

    @property
    def batch_len(self) -> int:
        return self._batch_len

    def batch_decode(self) -> int:
        """Evaluate the pending batch. Returns llama_decode's code: 0 ok, 1 no KV space left."""
        self._batch.n_tokens = self._batch_len
        rc = int(llama_cpp.llama_decode(self._ctx, self._batch))
        # llama.cpp books its perf counters at synchronization; the CPU backend has already
        # finished, so this is cheap and keeps `perf()` exact after every call.
        llama_cpp.llama_synchronize(self._ctx)
        if rc not in (0, 1):
            raise LlamaError(f"llama_decode failed with code {rc} ({self._batch_len} tokens)")
        return rc

    def decode(
        self, tokens: list[int], start_pos: int, *, logits: str = "last", seq: int = 0
    ) -> None:
        """Evaluate `tokens` of sequence `seq` at positions start_pos.. in one llama_decode call.

        logits: "last" requests the last token's logits only, "all" every token's, "none" none.
        """
        n = len(tokens)
        if n == 0 or n > self.settings.n_batch:
            raise ValueError(f"decode takes 1..{self.settings.n_batch} tokens, got {n}")
        self.batch_clear()
        want_all = logits == "all"
        for i, t in enumerate(tokens):
            self.batch_add(
                t, start_pos + i, seq, logits=want_all or (logits == "last" and i == n - 1)
            )
        if self.batch_decode() != 0:
            raise LlamaError(
                f"no room in the KV cache for {n} tokens at position {start_pos} "
                f"(context {self.n_ctx})"
            )

    def logits(self, index: int = -1) -> npt.NDArray[np.float32]:
        """A zero-copy view of the logits row of output `index` (valid until the next decode)."""
        ptr = llama_cpp.llama_get_logits_ith(self._ctx, index)
        if not ptr:
            raise LlamaError(f"no logits available for output {index}")
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def perf(self) -> PerfCounters:
        data = llama_cpp.llama_perf_context(self._ctx)
        return PerfCounters(
            prompt_eval_ms=float(data.t_p_eval_ms),
            eval_ms=float(data.t_eval_ms),
            n_prompt_eval=int(data.n_p_eval),
            n_eval=int(data.n_eval),
        )

    # -- sampling ---------------------------------------------------------------------------

    def new_sampler(
        self,
        *,
        temperature: float,
        top_p: float,
        top_k: int,
        min_p: float,
        seed: int,
        logit_bias: Sequence[tuple[int, float]] = (),
        grammar: str | None = None,
        penalties: Penalties | None = None,
    ) -> Sampler:
        return Sampler(
            self,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            min_p=min_p,
            seed=seed,
            logit_bias=logit_bias,
            grammar=Grammar(self, grammar) if grammar is not None else None,
            penalties=penalties,
        )

    @property
    def ctx(self) -> Any:
        return self._ctx

    def close(self) -> None:
        if self._closed:
            return
        llama_cpp.llama_batch_free(self._batch)
        llama_cpp.llama_free(self._ctx)
        super().close()


class Sampler:
    """A llama.cpp sampler chain; sampling runs in C on the last logits row.

    Greedy decoding skips the chain: llama.cpp's greedy sampler first copies the whole vocabulary
    into a candidate array (0.6 ms a token for Gemma 3's 262k entries on a 2-vCPU VM), where an
    argmax over the logits row picks the same token (the first maximum) in about 40 us. With a
    logit bias, greedy decoding takes the argmax of a biased copy of the row. Repetition
    penalties (`Penalties`) work on a copy of the row too, which the chain then samples from as
    a candidate array.
    """

    def __init__(
        self,
        model: LlamaModel,
        *,
        temperature: float,
        top_p: float,
        top_k: int,
        min_p: float,
        seed: int,
        logit_bias: Sequence[tuple[int, float]] = (),
        grammar: Grammar | None = None,
        penalties: Penalties | None = None,
    ) -> None:
        self._ctx = model.ctx
        self._model = model
        self._chain: Any = None
        self._grammar = grammar
        self._penalties = penalties
        self.n_masked = 0  # tokens the grammar refused, so that the whole vocabulary was masked
        for token, _ in logit_bias:
            # llama.cpp's logit-bias sampler indexes the candidate array with these ids unchecked
            if not 0 <= token < model.n_vocab:
                raise ValueError(f"logit_bias token id {token} is outside the vocabulary")
        self._bias_ids = np.array([t for t, _ in logit_bias], dtype=np.intp)
        self._bias_values = np.array([b for _, b in logit_bias], dtype=np.float32)
        if temperature < GREEDY_BELOW:
            return
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        if logit_bias:
            biases = (llama_cpp.llama_logit_bias * len(logit_bias))()
            for i, (token, bias) in enumerate(logit_bias):
                biases[i].token = llama_cpp.llama_token(token)
                biases[i].bias = bias
            llama_cpp.llama_sampler_chain_add(
                chain,
                llama_cpp.llama_sampler_init_logit_bias(model.n_vocab, len(logit_bias), biases),
            )
        if top_k > 0:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_k(top_k))
        if top_p < 1.0:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_p(top_p, 1))
        if min_p > 0.0:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_min_p(min_p, 1))
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(temperature))
        llama_cpp.llama_sampler_chain_add(
            chain, llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF)
        )
        self._chain = chain

    def sample(self, index: int = -1) -> int:
        """Sample from output `index`'s logits (and accept the token into the chain's state).

        With a grammar, the token is first drawn without it and kept if the grammar allows it,
        which is the common case and costs one check; otherwise the grammar masks the whole
        vocabulary and the token is drawn again from what it allows (llama.cpp's own sampling
        helper does the same: masking a 262k-token vocabulary on every step is the slow part).
        """
        token = self._draw(index)
        grammar = self._grammar
        if grammar is not None:
            if not grammar.allows(token):
                self.n_masked += 1
                token = self._draw_constrained(index, grammar)
                # llama.cpp aborts the process on accepting a token the grammar forbids; a
                # masked draw cannot give one unless the row held NaN, but nothing is trusted
                if not grammar.allows(token):
                    raise GrammarDeadEndError(_DEAD_END, param="grammar")
            if not self._model.is_eog(token):
                grammar.accept(token)
        if self._penalties is not None:
            self._penalties.accept(token)
        return token

    def _draw(self, index: int) -> int:
        if self._chain is None:
            return int(np.argmax(self._row(index)))
        if self._penalties is None:
            return int(llama_cpp.llama_sampler_sample(self._chain, self._ctx, index))
        candidates = _Candidates(self._row(index))
        llama_cpp.llama_sampler_apply(self._chain, candidates.ref)
        return candidates.selected()

    def _row(self, index: int) -> npt.NDArray[np.float32]:
        """The logits row the draw starts from: penalised, and biased when decoding greedily
        (the chain applies the logit bias itself)."""
        row = self._model.logits(index)
        if self._penalties is not None:
            row = self._penalties.apply(row)
        if self._chain is None and len(self._bias_ids):
            row = row if self._penalties is not None else row.copy()
            np.add.at(row, self._bias_ids, self._bias_values)
        return row

    def _draw_constrained(self, index: int, grammar: Grammar) -> int:
        candidates = _Candidates(self._row(index))
        grammar.mask(candidates)
        if not np.isfinite(candidates.logits).any():
            raise GrammarDeadEndError(_DEAD_END, param="grammar")
        if self._chain is None:
            return int(np.argmax(candidates.logits))
        llama_cpp.llama_sampler_apply(self._chain, candidates.ref)
        return candidates.selected()

    def close(self) -> None:
        if self._chain:
            llama_cpp.llama_sampler_free(self._chain)
            self._chain = None
        if self._grammar is not None:
            self._grammar.close()
            self._grammar = None


_DEAD_END = "no token of the model's vocabulary can continue the text under the grammar"
_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])


class _Candidates:
    """A llama_token_data_array over the whole vocabulary, backed by a numpy array."""

    def __init__(self, logits: npt.NDArray[np.float32]) -> None:
        data = np.empty(len(logits), dtype=_TOKEN_DATA)
        data["id"] = np.arange(len(logits), dtype=np.int32)
        data["logit"] = logits
        data["p"] = 0.0
        self._data = data
        self._array = llama_cpp.llama_token_data_array(
            data=data.ctypes.data_as(llama_cpp.llama_token_data_p),
            size=len(data),
            selected=-1,
            sorted=False,
        )
        self.ref = ctypes.byref(self._array)

    @property
    def logits(self) -> npt.NDArray[np.float32]:
        return self._data["logit"]

    def selected(self) -> int:
        # samplers may sort the entries in place: read the chosen entry through the array
        return int(self._array.data[self._array.selected].id)


class Grammar:
    """A GBNF grammar compiled by llama.cpp against a model's vocabulary (its root rule: `root`).

    llama.cpp aborts the process if a token the grammar forbids is accepted: `allows` or
    `mask` comes first, and end-of-generation tokens are never accepted (generation ends there).
    """

    def __init__(self, model: LlamaModel, text: str) -> None:
        if "\x00" in text:
            raise GrammarError("the grammar contains a NUL character", param="grammar")
        with _llama_errors() as errors:
            smpl = llama_cpp.llama_sampler_init_grammar(model.vocab, text.encode(), b"root")
        if not smpl:
            reason = " ".join(" ".join(errors).split()) or "llama.cpp refused it"
            raise GrammarError(f"invalid grammar: {reason[:300]}", param="grammar")
        self._smpl: Any = smpl
        self._one = (llama_cpp.llama_token_data * 1)()
        self._one_array = llama_cpp.llama_token_data_array(
            data=self._one, size=1, selected=-1, sorted=False
        )

    def allows(self, token: int) -> bool:
        self._one[0].id = llama_cpp.llama_token(token)
        self._one[0].logit = 0.0
        self._one_array.size = 1
        llama_cpp.llama_sampler_apply(self._smpl, ctypes.byref(self._one_array))
        return bool(np.isfinite(self._one[0].logit))

    def mask(self, candidates: _Candidates) -> None:
        """Set the logit of every token the grammar forbids here to -inf."""
        llama_cpp.llama_sampler_apply(self._smpl, candidates.ref)

    def accept(self, token: int) -> None:
        llama_cpp.llama_sampler_accept(self._smpl, token)

    def close(self) -> None:
        if self._smpl:
            llama_cpp.llama_sampler_free(self._smpl)
            self._smpl = None

    def __del__(self) -> None:  # pragma: no cover - best effort
        with contextlib.suppress(Exception):
            self.close()
