"""The engine facade used by the servers: prompts in, an async stream of events out.

The HTTP layer sees only this class. Work runs on a scheduler's worker thread; events come back
to the asyncio loop through a queue. When a consumer stops iterating (client disconnect), the
job is cancelled and the worker moves on within one token step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from edgellm.config import EngineConfig
from edgellm.engine.chat_template import ChatTemplate
from edgellm.engine.jobs import GenerationJob
from edgellm.engine.llama import Grammar, LlamaModel, LlamaSettings
from edgellm.engine.scheduler import Scheduler
from edgellm.engine.types import (
    Failed,
    Finished,
    GenerationEvent,
    GenerationRequest,
    LoglikelihoodRequest,
    LoglikelihoodResult,
    TextDelta,
    TokenLogprob,
)
from edgellm.errors import ContextLengthExceededError, InvalidRequestError

log = logging.getLogger(__name__)

MAX_GRAMMAR_CHARS = 65_536
"""A grammar's rules are expanded in memory (a repetition up to 2,000-fold each): the text is
bounded so that one request cannot hold much memory."""

MAX_TOP_LOGPROBS = 20
"""Alternatives per token a request may ask for (each costs a partial sort of the vocabulary)."""

FinishListener = Callable[[str, Finished], None]

# Texts longer than this many characters are tokenized on a worker thread (llama.cpp's
# tokenizer releases the GIL), so one long prompt does not stall every other request on the
# event loop; shorter ones take under a few milliseconds and are tokenized in place.
OFF_LOOP_CHARS = 4096

T = TypeVar("T")


async def off_loop(n_chars: int, fn: Callable[[], T]) -> T:
    """`fn()`, on a worker thread if it handles more than OFF_LOOP_CHARS characters of text."""
    if n_chars <= OFF_LOOP_CHARS:
        return fn()
    return await asyncio.to_thread(fn)


@dataclass(frozen=True, slots=True)
class EngineInfo:
    name: str
    path: Path
    n_ctx: int
    n_ctx_train: int
    n_vocab: int
    n_threads: int
    chat_template_is_fallback: bool


class Engine:
    def __init__(self, name: str, model: LlamaModel, config: EngineConfig) -> None:
        self.name = name
        self.config = config
        self._model = model
        self._listeners: list[FinishListener] = []
        self._scheduler = Scheduler(
            model, n_slots=config.parallel, max_queue=config.max_queue, name=name
        )
        self._template = ChatTemplate(
            model.chat_template(),
            bos_token=model.special_text(model.bos_id) if model.bos_id >= 0 else "",
            eos_token=model.special_text(model.eos_id) if model.eos_id >= 0 else "",
            architecture=model.meta("general.architecture"),
        )
        self.info = EngineInfo(
            name=name,
            path=model.path,
            n_ctx=model.n_ctx,
            n_ctx_train=model.n_ctx_train,
            n_vocab=model.n_vocab,
            n_threads=model.n_threads,
            chat_template_is_fallback=self._template.is_fallback,
        )

    @classmethod
    def load(cls, name: str, path: Path, config: EngineConfig) -> Engine:
        settings = LlamaSettings(
            n_ctx=config.n_ctx,
            n_threads=config.n_threads,
            n_batch=config.n_batch,
            n_ubatch=config.n_ubatch,
            flash_attn=config.flash_attn,
            n_seq_max=config.parallel,
            kv_unified=config.kv_unified,
        )
        return cls(name, LlamaModel(path, settings), config)

    @property
    def scheduler(self) -> Scheduler:
        return self._scheduler

    @property
    def weights(self) -> LlamaModel:
        """The loaded model, for an embedding context that shares its weights."""
        return self._model

    # -- prompts ----------------------------------------------------------------------------

    def chat_prompt(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[int]:
        """The prompt of `messages`; `tools` (OpenAI tool objects) are given to the template,
        for a template that describes them itself (`tool_template`)."""
        text = self._render_chat(messages, tools)
        self._check_text_fits(text, param="messages")
        return self._chat_tokens(text)

    @property
    def tool_template(self) -> str | None:
        """The chat template's source if it renders `tools` itself (else None: the caller
        describes tools in the messages)."""
        return self._template.source if self._template.renders_tools else None

    def count_chat_tokens(self, messages: Sequence[Mapping[str, Any]]) -> int:
        """The prompt length of `messages`; for a text too long to fit the window, a lower
        bound that is still over the window (what trimming a history needs to know)."""
        text = self._render_chat(messages)
        if self._too_long(text):
            return len(text.encode()) // self._model.max_piece_bytes
        return len(self._chat_tokens(text))

    def _render_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> str:
        if not messages:
            raise InvalidRequestError("messages must not be empty", param="messages")
        return self._template.render(messages, add_generation_prompt=True, tools=tools)

    def _chat_tokens(self, text: str) -> list[int]:
        tokens = self._model.tokenize(text, add_special=False, parse_special=True)
        if self._model.add_bos and (not tokens or tokens[0] != self._model.bos_id):
            tokens.insert(0, self._model.bos_id)
        return tokens

    def text_prompt(self, prompt: str | Sequence[int]) -> list[int]:
        if isinstance(prompt, str):
            self._check_text_fits(prompt, param="prompt")
            tokens = self._model.tokenize(prompt, add_special=True, parse_special=True)
        else:
            tokens = [int(t) for t in prompt]
            self.check_token_ids(tokens, param="prompt")
        if not tokens:
            raise InvalidRequestError("the prompt is empty", param="prompt")
        return tokens

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        self._check_text_fits(text, param="content")
        return self._model.tokenize(text, add_special=add_special, parse_special=add_special)

    def _too_long(self, text: str) -> bool:
        # Tokenizing costs up to ~9 us a byte (Gemma's tokenizer on 1 MB of spaces, and worse
        # than linear beyond: 36 s for 4 MB), so a text that cannot fit is refused unread.
        n_ctx = self._model.n_ctx
        if 4 * len(text) <= n_ctx:  # at most n_ctx bytes of UTF-8: it may fit
            return False
        return len(text.encode()) > n_ctx * self._model.max_piece_bytes

    def _check_text_fits(self, text: str, *, param: str) -> None:
        if self._too_long(text):
            raise ContextLengthExceededError(
                f"This model's maximum context length is {self._model.n_ctx} tokens, and a "
                f"text of {len(text.encode())} bytes cannot fit in it (no token of this model "
                f"stands for more than {self._model.max_piece_bytes} bytes).",
                param=param,
            )

    def detokenize(self, tokens: Sequence[int]) -> str:
        ids = list(tokens)
        self.check_token_ids(ids, param="tokens")
        return self._model.detokenize(ids)

    def check_token_ids(self, tokens: Sequence[int], *, param: str) -> None:
        """Token ids from a request must be in the vocabulary: llama.cpp looks them up with
        `std::vector::at`, and the exception it throws aborts the process."""
        n_vocab = self._model.n_vocab
        bad = [t for t in tokens if not 0 <= t < n_vocab]
        if bad:
            raise InvalidRequestError(
                f"token ids out of range (the vocabulary has ids 0..{n_vocab - 1}): {bad[:5]}",
                param=param,
            )

    def check_grammar(self, text: str) -> None:
        """Compile a request's grammar once (a GrammarError, a 400, says why llama.cpp refused
        it), so that a bad one never reaches the worker thread."""
        if len(text) > MAX_GRAMMAR_CHARS:
            raise InvalidRequestError(
                f"the grammar has {len(text)} characters; at most {MAX_GRAMMAR_CHARS} are accepted",
                param="grammar",
            )
        if not text.strip():
            raise InvalidRequestError("the grammar is empty", param="grammar")
        Grammar(self._model, text).close()

    def resolve_max_tokens(self, n_prompt: int, requested: int | None) -> int:
        """The generation cap for a prompt, or a clear 400 naming the token counts."""
        n_ctx = self._model.n_ctx
        if requested is None:
            room = n_ctx - n_prompt
            if room < 1:
                raise ContextLengthExceededError(
                    f"This model's maximum context length is {n_ctx} tokens, but the prompt has "
                    f"{n_prompt} tokens.",
                    param="messages",
                )
            return min(self.config.default_max_tokens, room)
        if n_prompt + requested > n_ctx:
            raise ContextLengthExceededError(
                f"This model's maximum context length is {n_ctx} tokens. However, you requested "
                f"{n_prompt + requested} tokens ({n_prompt} in the prompt, {requested} for the "
                f"completion). Please reduce the prompt or max_tokens.",
                param="max_tokens",
            )
        return requested

    # -- work -------------------------------------------------------------------------------

    def add_listener(self, listener: FinishListener) -> None:
        """Call `listener(engine_name, finished)` for every generation that ends, cancelled ones
        included (on the worker thread: keep it quick and thread-safe)."""
        self._listeners.append(listener)

    def submit(self, request: GenerationRequest) -> GenerationStream:
        """Queue a generation now (OverloadedError if the queue is full) and return its stream.

        Every value that reaches llama.cpp is checked here (`check`), whoever built the request:
        an invalid one is a 400 naming it, never a C++ exception on the worker thread."""
        self.check(request)
        return GenerationStream(self._scheduler, request, self._notify)

    def check(self, request: GenerationRequest) -> None:
        """Refuse a request llama.cpp could not run (400 naming the field), before any work:
        `submit` does, and so does a caller with work to queue before it (an `echo`)."""
        self.check_token_ids(request.prompt_tokens, param="prompt")
        if not request.prompt_tokens:
            raise InvalidRequestError("the prompt is empty", param="prompt")
        if len(request.prompt_tokens) > self._model.n_ctx:
            raise ContextLengthExceededError(
                f"This model's maximum context length is {self._model.n_ctx} tokens, but the "
                f"prompt has {len(request.prompt_tokens)} tokens.",
                param="messages",
            )
        bias = request.sampling.logit_bias
        if bias:
            self.check_token_ids([t for t, _ in bias], param="logit_bias")
        request.sampling.penalties.check()
        if request.sampling.grammar is not None:
            self.check_grammar(request.sampling.grammar)
            if request.ignore_eos:
                raise InvalidRequestError(
                    "ignore_eos cannot be combined with a grammar: a finished grammar allows "
                    "nothing but the end of generation",
                    param="ignore_eos",
                )

    def _notify(self, done: Finished) -> None:
        for listener in self._listeners:
            try:
                listener(self.name, done)
            except Exception:
                log.exception("finish listener failed")

    async def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[LoglikelihoodResult]:
        """Score each (context, continuation) pair of texts."""

        def tokenize_all() -> list[LoglikelihoodRequest]:
            return [self.loglikelihood_request(c, x) for c, x in pairs]

        size = sum(len(c) + len(x) for c, x in pairs)
        requests = await off_loop(size, tokenize_all)
        future = self._scheduler.submit_loglikelihood(requests)
        return await asyncio.wrap_future(future)

    async def prompt_logprobs(self, tokens: Sequence[int], top: int) -> list[TokenLogprob]:
        """Every prompt token with its log-prob given the tokens before it and its `top` most
        likely alternatives, scored by the same job as `loglikelihood` (continuation: all but
        the first token). The first token has none (nothing precedes it): its `logprob` is NaN
        and it has no alternatives, what OpenAI's `echo` writes as null."""
        ids = [int(t) for t in tokens]
        self.check_token_ids(ids, param="prompt")
        if not ids:
            raise InvalidRequestError("the prompt is empty", param="prompt")
        if len(ids) > self._model.n_ctx:
            raise ContextLengthExceededError(
                f"This model's maximum context length is {self._model.n_ctx} tokens, but the "
                f"prompt has {len(ids)} tokens.",
                param="prompt",
            )
        if not 0 <= top <= MAX_TOP_LOGPROBS:
            raise InvalidRequestError(
                f"logprobs must be in 0..{MAX_TOP_LOGPROBS}, got {top}", param="logprobs"
            )
        piece = self._model.token_bytes(ids[0])
        first = TokenLogprob(
            token=piece.decode("utf-8", errors="replace"),
            token_id=ids[0],
            logprob=math.nan,
            bytes=piece,
        )
        if len(ids) == 1:
            return [first]
        request = LoglikelihoodRequest(
            context_tokens=ids[:1], continuation_tokens=ids[1:], top_logprobs=top
        )
        (result,) = await asyncio.wrap_future(self._scheduler.submit_loglikelihood([request]))
        return [first, *result.tokens]

    def loglikelihood_request(self, context: str, continuation: str) -> LoglikelihoodRequest:
        """Tokenize as lm-eval does: the continuation's tokens are those the whole text adds."""
        if not continuation:
            raise InvalidRequestError("continuation must not be empty", param="continuation")
        self._check_text_fits(context + continuation, param="items")
        ctx = self._model.tokenize(context, add_special=True, parse_special=False)
        whole = self._model.tokenize(context + continuation, add_special=True, parse_special=False)
        if whole[: len(ctx)] == ctx and len(whole) > len(ctx):
            cont = whole[len(ctx) :]
        else:  # the boundary merged into one token: score the continuation on its own
            cont = self._model.tokenize(continuation, add_special=False, parse_special=False)
        if not ctx:
            ctx = [self._model.bos_id]
        if len(ctx) + len(cont) > self._model.n_ctx:
            raise ContextLengthExceededError(
                f"context ({len(ctx)} tokens) and continuation ({len(cont)} tokens) exceed the "
                f"model's context window of {self._model.n_ctx} tokens"
            )
        return LoglikelihoodRequest(context_tokens=ctx, continuation_tokens=cont)

    def close(self) -> None:
        self._scheduler.close()
        self._model.close()


class GenerationStream:
    """The events of one queued generation. `cancel()` (or leaving the loop) stops the job.

    Text deltas that pile up while the consumer is busy are merged, so a slow client costs no
    engine time and no extra chunks.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        request: GenerationRequest,
        on_finish: Callable[[Finished], None],
    ) -> None:
        self._on_finish = on_finish
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[GenerationEvent] = asyncio.Queue()
        self._job = GenerationJob(request=request, sink=self._sink)
        scheduler.submit_generation(self._job)

    def _sink(self, event: GenerationEvent) -> None:  # called on the worker thread
        if isinstance(event, Finished):
            self._on_finish(event)
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)

    def cancel(self) -> None:
        self._job.cancelled.set()

    async def __aiter__(self) -> AsyncIterator[GenerationEvent]:
        queue = self._queue
        try:
            while True:
                event = await queue.get()
                if isinstance(event, TextDelta):
                    while not queue.empty():
                        nxt = queue.get_nowait()
                        if not isinstance(nxt, TextDelta):
                            yield event
                            event = nxt
                            break
                        event = _merge(event, nxt)
                yield event
                if isinstance(event, Finished | Failed):
                    return
        finally:
            self.cancel()


def _merge(a: TextDelta, b: TextDelta) -> TextDelta:
    return TextDelta(
        text=a.text + b.text, token_ids=a.token_ids + b.token_ids, logprobs=a.logprobs + b.logprobs
    )
