"""OpenAI answers to engine events: SSE streams and whole JSON answers, chat or text completions.

The one reader of what an OpenAI-compatible server sends (an EdgeLLM node, llama-server, vLLM, a
cloud): the gateway's HTTP backend turns it into the events an in-process engine gives, the
testbed's client times its text, and the soak and fault tests count how streams end. Malformed
pieces are skipped by default (an upstream's stray comment line does not end a stream); a strict
reader raises `ValueError` instead (the testbed records such a stream as failed).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from edgellm.engine.types import (
    Finished,
    FinishReason,
    TextDelta,
    Timings,
    TokenLogprob,
    ToolCallDelta,
    TopLogprob,
)
from edgellm.wire import echo

DONE = b"[DONE]"
# every Timings field, with its type (an upstream's counters may come as floats or ints)
_TIMING_TYPES: dict[str, type[Any]] = {k: type(v) for k, v in asdict(Timings()).items()}


def error_message(error: object) -> str:
    """The message of an OpenAI `error` value (an object with `message`, or anything else)."""
    if isinstance(error, dict):
        return str(error.get("message", error))
    return str(error)


def error_text(raw: bytes, limit: int = 500) -> str:
    """What an error answer's body says: its `error.message`, else the start of the body."""
    try:
        data = orjson.loads(raw)
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("error") is not None:
        return error_message(data["error"])[:limit]
    return raw[:limit].decode(errors="replace")


def timings(raw: object) -> Timings:
    """A `timings` object (EdgeLLM's or llama-server's) as `Timings`; unknown or mistyped
    fields are left at zero."""
    known: dict[str, Any] = {}
    if isinstance(raw, dict):
        for name, kind in _TIMING_TYPES.items():
            value = raw.get(name)
            if isinstance(value, int | float):
                known[name] = kind(value)
    return Timings(**known)


def chat_logprobs(raw: Any) -> tuple[TokenLogprob, ...]:
    """A chat choice's `logprobs` (`{"content": [...]}`); token ids are not on the wire (-1)."""
    if not isinstance(raw, dict):
        return ()
    out = []
    for item in raw.get("content") or []:
        token = str(item.get("token", ""))
        top = tuple(
            TopLogprob(
                token=str(t.get("token", "")),
                token_id=-1,
                logprob=float(t.get("logprob", 0.0)),
                bytes=bytes(t.get("bytes") or str(t.get("token", "")).encode()),
            )
            for t in item.get("top_logprobs") or []
        )
        out.append(
            TokenLogprob(
                token=token,
                token_id=-1,
                logprob=float(item.get("logprob", 0.0)),
                bytes=bytes(item.get("bytes") or token.encode()),
                top=top,
            )
        )
    return tuple(out)


def completion_logprobs(raw: Any) -> tuple[TokenLogprob, ...]:
    """A text completion choice's `logprobs` (parallel `tokens`, `token_logprobs`, ...)."""
    if not isinstance(raw, dict):
        return ()
    tokens = raw.get("tokens") or []
    values = raw.get("token_logprobs") or []
    tops = raw.get("top_logprobs") or [None] * len(tokens)
    out = []
    for token, value, top in zip(tokens, values, tops, strict=False):
        alts = tuple(
            TopLogprob(token=str(k), token_id=-1, logprob=float(v), bytes=str(k).encode())
            for k, v in (top or {}).items()
        )
        out.append(
            TokenLogprob(
                token=str(token),
                token_id=-1,
                # null: an echoed prompt's first token (see wire/echo.py)
                logprob=float(value) if value is not None else math.nan,
                bytes=str(token).encode(),
                top=alts,
            )
        )
    return tuple(out)


_REASONS = {"length": FinishReason.LENGTH, "tool_calls": FinishReason.TOOL_CALLS}


def tool_calls(raw: object, *, whole: bool) -> list[ToolCallDelta]:
    """`message.tool_calls` (`whole`: each call complete, numbered in order) or a chunk's
    `delta.tool_calls` (pieces numbered by their `index`) as tool call events."""
    out: list[ToolCallDelta] = []
    for i, item in enumerate(raw if isinstance(raw, list) else ()):
        if not isinstance(item, dict):
            continue
        fn = item.get("function")
        fn = fn if isinstance(fn, dict) else {}
        index = item.get("index", i) if not whole else i
        out.append(
            ToolCallDelta(
                index=index if isinstance(index, int) and 0 <= index < 1024 else i,
                id=str(item["id"]) if item.get("id") else None,
                name=str(fn["name"]) if fn.get("name") else None,
                arguments=str(fn.get("arguments") or ""),
                done=whole,
            )
        )
    return out


def _finished(finish: str, usage: dict[str, Any], raw_timings: object, n_tokens: int) -> Finished:
    """The final event; `n_tokens` counts the completion when usage does not say."""
    return Finished(
        reason=_REASONS.get(finish, FinishReason.STOP),
        prompt_tokens=int(usage.get("prompt_tokens", 0)),
        completion_tokens=int(usage.get("completion_tokens", n_tokens)),
        timings=timings(raw_timings),
    )


@dataclass(slots=True)
class StreamReader:
    """One SSE stream of chat or text completion chunks, read line by line (`line`) or from raw
    bytes as they arrive (`feed`). Gives the text deltas; remembers how the stream ended.

    `strip_echo`: a text completion with `echo` starts with the prompt, which the caller sends
    to its own client once, so it is cut from the first delta that carries it, and the
    log-probs of the prompt's tokens go to `echo_logprobs` (see `wire/echo.py`)."""

    strict: bool = False
    strip_echo: str = ""
    echo_logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, Any] = field(default_factory=dict)  # the last chunk's that had some
    error: str | None = None  # an error event's message: the stream failed
    done: bool = False  # `data: [DONE]` arrived
    deltas: int = 0  # deltas given, counting one per log-prob when there are log-probs
    _pending: bytes = b""

    @property
    def ended(self) -> bool:
        """Nothing more will come that matters: [DONE] or an error event was read."""
        return self.done or self.error is not None

    def feed(self, data: bytes) -> list[TextDelta | ToolCallDelta]:
        """Raw bytes of the body, cut anywhere: the deltas of the lines they complete. (One
        loop with no call per line or chunk: it runs for every token a gateway relays.)"""
        if b"\n" not in data:
            self._pending += data
            return []
        *lines, self._pending = (self._pending + data).split(b"\n")
        out: list[TextDelta | ToolCallDelta] = []
        for raw in lines:
            line = raw.strip()
            if not line.startswith(b"data:") or self.done or self.error is not None:
                continue
            payload = line[5:].strip()
            if payload == DONE:
                self.done = True
                continue
            try:
                chunk = orjson.loads(payload)
            except ValueError:
                if self.strict:
                    raise
                continue
            if not isinstance(chunk, dict):
                if self.strict:
                    raise ValueError(f"a chunk that is not a JSON object: {payload[:200]!r}")
                continue
            if "error" in chunk:
                self.error = error_message(chunk["error"])
                continue
            usage, timings = chunk.get("usage"), chunk.get("timings")
            if usage:
                self.usage = usage
            if timings:
                self.timings = timings
            for choice in chunk.get("choices") or ():
                if "delta" in choice:  # chat
                    delta = choice["delta"] or {}
                    text = delta.get("content") or ""
                    if delta.get("tool_calls"):
                        out.extend(tool_calls(delta["tool_calls"], whole=False))
                    lps = chat_logprobs(choice["logprobs"]) if choice.get("logprobs") else ()
                else:
                    text = choice.get("text") or ""
                    lps = completion_logprobs(choice["logprobs"]) if choice.get("logprobs") else ()
                    if self.strip_echo and text.startswith(self.strip_echo):
                        n = len(self.strip_echo)
                        text, self.strip_echo = text[n:], ""
                        lps = self._cut_echo(choice["logprobs"], lps, n)
                if text or lps:
                    self.deltas += len(lps) or 1
                    out.append(TextDelta(text, (), lps))
                finish = choice.get("finish_reason")
                if finish:
                    self.finish_reason = finish
        return out

    def _cut_echo(
        self, raw: object, lps: tuple[TokenLogprob, ...], n_chars: int
    ) -> tuple[TokenLogprob, ...]:
        """The answer's log-probs of a chunk that starts with the echoed prompt; the prompt's
        are kept in `echo_logprobs`."""
        prompt, rest = echo.split(lps, _offsets(raw), n_chars)
        self.echo_logprobs.extend(prompt)
        return tuple(rest)

    def line(self, line: bytes | str) -> list[TextDelta | ToolCallDelta]:
        """One whole line of the stream (`data: {...}`; other lines carry nothing)."""
        return self.feed((line.encode() if isinstance(line, str) else line) + b"\n")

    def finished(self) -> Finished | None:
        """The final event, once a finish reason has arrived (None before)."""
        if self.finish_reason is None:
            return None
        return _finished(self.finish_reason, self.usage, self.timings, self.deltas)


@dataclass(frozen=True, slots=True)
class Answer:
    """A whole (non-streamed) chat or text completion: the events its stream would have given.
    `error` is set (and `finished` None) when it is not a usable answer."""

    delta: TextDelta | None = None  # the text and every log-prob; None if both are empty
    tool_calls: tuple[ToolCallDelta, ...] = ()  # a chat answer's calls, each whole
    finished: Finished | None = None
    error: str | None = None
    echo_logprobs: tuple[TokenLogprob, ...] = ()  # the stripped echo's (see `wire/echo.py`)


def answer(raw: bytes, *, strip_echo: str = "") -> Answer:
    """Decode a whole chat or text completion answer's body."""
    try:
        data = orjson.loads(raw)
    except ValueError:
        return Answer(error=f"the answer is not JSON: {raw[:200]!r}")
    if not isinstance(data, dict):
        return Answer(error="the answer is not a JSON object")
    if "error" in data:
        return Answer(error=error_message(data["error"]))
    choices = data.get("choices") or []
    choice = choices[0] if choices and isinstance(choices[0], dict) else {}
    prompt_lps: list[TokenLogprob] = []
    calls: list[ToolCallDelta] = []
    if "message" in choice:  # chat
        message = choice.get("message") or {}
        text = message.get("content") or ""
        calls = tool_calls(message.get("tool_calls"), whole=True)
        lps = chat_logprobs(choice.get("logprobs"))
    else:
        text = choice.get("text") or ""
        lps = completion_logprobs(choice.get("logprobs"))
        if strip_echo and text.startswith(strip_echo):
            text = text[len(strip_echo) :]
            prompt_lps, rest = echo.split(lps, _offsets(choice.get("logprobs")), len(strip_echo))
            lps = tuple(rest)
    delta = TextDelta(text=text, token_ids=(), logprobs=lps) if text or lps else None
    finish = choice.get("finish_reason")
    if not finish:
        return Answer(delta=delta, error="the answer has no finish_reason")
    n_tokens = len(lps) if lps else int(bool(text))
    done = _finished(finish, data.get("usage") or {}, data.get("timings"), n_tokens)
    if calls:  # a chat answer: nothing echoed
        return Answer(delta=delta, finished=done, tool_calls=tuple(calls))
    return Answer(delta=delta, finished=done, echo_logprobs=tuple(prompt_lps))


def _offsets(raw: object) -> list[object] | None:
    """A legacy `logprobs` object's `text_offset` list, if it has one."""
    offsets = raw.get("text_offset") if isinstance(raw, dict) else None
    return offsets if isinstance(offsets, list) else None
