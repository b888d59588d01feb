"""A fake OpenAI-compatible backend (raw ASGI, no framework) for tests and overhead benchmarks.

Its behaviour can change while it runs: instant or slow tokens, failing (5xx), flapping (every
n-th request fails), saturated (429), dying mid-stream, chosen token log-probs (confidence), and
an unhealthy `/health`.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.types import Receive, Scope, Send

from edgellm.engine.types import Finished, FinishReason, Timings, TokenLogprob, TopLogprob
from edgellm.wire import encode


@dataclass
class FakeBehaviour:
    reply: list[str] = field(default_factory=lambda: ["Hello", " from", " the", " fake", "."])
    first_token_delay_s: float = 0.0
    token_delay_s: float = 0.0
    fail_status: int | None = None  # every request fails with this status
    fail_every: int = 0  # flapping: request number k fails when k % fail_every == 0
    die_after_tokens: int | None = None  # drop the connection mid-stream
    logprob: float = -0.05  # each token's log-prob (high = confident)
    healthy: bool = True
    name: str = "fake"


@dataclass
class FakeBackend:
    behaviour: FakeBehaviour = field(default_factory=FakeBehaviour)
    requests: int = 0
    active: int = 0
    cancelled: int = 0
    last_body: dict[str, Any] = field(default_factory=dict)
    last_headers: dict[str, str] = field(default_factory=dict)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/health":
            ok = self.behaviour.healthy
            await _json(send, 200 if ok else 503, {"status": "ok" if ok else "down"})
            return
        if path == "/v1/models":
            await _json(send, 200, {"object": "list", "data": [{"id": self.behaviour.name}]})
            return
        if path in {"/v1/loglikelihood", "/tokenize"}:
            body = self.last_body = await _read_json(receive)
            if path == "/tokenize":
                await _json(send, 200, {"tokens": list(range(len(body["content"].split())))})
                return
            data = [
                {"index": i, "logprob": -1.0, "is_greedy": True, "n_tokens": 1,
                 "token_logprobs": [-1.0]}
                for i, _ in enumerate(body["items"])
            ]  # fmt: skip
            await _json(send, 200, {"object": "list", "model": body["model"], "data": data})
            return
        if path not in {"/v1/chat/completions", "/v1/completions"}:
            await _json(send, 404, {"error": {"message": "not found", "type": "invalid"}})
            return
        body = self.last_body = await _read_json(receive)
        self.requests += 1
        self.last_headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        b = self.behaviour
        if b.fail_status or (b.fail_every and self.requests % b.fail_every == 0):
            status = b.fail_status or 500
            await _json(send, status, {"error": {"message": f"fake {status}", "type": "server"}})
            return
        self.active += 1
        try:
            await self._answer(body, path == "/v1/chat/completions", send, receive)
        finally:
            self.active -= 1

    def _logprob(self, token: str, top_k: int) -> TokenLogprob:
        """The behaviour's log-prob for `token`, with `top_k` made-up alternatives below it."""
        lp = self.behaviour.logprob
        top = tuple(
            TopLogprob(token=f"{token}~{k}", token_id=-1, logprob=lp - 1 - k, bytes=b"")
            for k in range(top_k)
        )
        return TokenLogprob(token=token, token_id=-1, logprob=lp, bytes=token.encode(), top=top)

    async def _answer(self, body: dict[str, Any], chat: bool, send: Send, receive: Receive) -> None:
        b = self.behaviour
        started = time.perf_counter()
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or 16
        tokens = b.reply[:max_tokens]
        reply = _Reply(
            tokens=tokens,
            finish="length" if len(tokens) < len(b.reply) else "stop",
            chat=chat,
            want_lp=bool(body.get("logprobs")),
            top_k=int(body.get("top_logprobs") or 0) if chat else int(body.get("logprobs") or 0),
            ident=encode.ResponseIds(model=str(body.get("model", b.name)), id="fake-1", created=0),
            started=started,
        )
        if b.first_token_delay_s:
            await asyncio.sleep(b.first_token_delay_s)
        if not body.get("stream"):
            await self._whole(reply, send, receive)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        gone = asyncio.Event()

        async def watch() -> None:
            await _until_disconnect(receive)
            gone.set()

        watcher = asyncio.create_task(watch())
        try:
            await self._stream(reply, send, gone)
        finally:
            watcher.cancel()

    async def _whole(self, reply: _Reply, send: Send, receive: Receive) -> None:
        """A non-streamed answer, as llama-server gives it: the whole text, every token's
        log-prob if asked, usage and `timings`. A client that leaves while the tokens are
        being "generated" cancels it."""
        b, tokens = self.behaviour, reply.tokens
        if b.die_after_tokens is not None and b.die_after_tokens < len(tokens):
            # the head, then the connection drops before the body
            head = [(b"content-type", b"application/json"), (b"content-length", b"1000")]
            await send({"type": "http.response.start", "status": 200, "headers": head})
            raise ConnectionAbortedError("fake backend dies mid-answer")
        if b.token_delay_s and len(tokens) > 1:
            watcher = asyncio.create_task(_until_disconnect(receive))
            try:
                await asyncio.wait_for(asyncio.shield(watcher), b.token_delay_s * (len(tokens) - 1))
                self.cancelled += 1
                return
            except TimeoutError:
                pass
            finally:
                watcher.cancel()
        got = encode.Collected("".join(tokens), [self._logprob(t, reply.top_k) for t in tokens])
        done, ident, want_lp = reply.finished(), reply.ident, reply.want_lp
        if reply.chat:
            answer = encode.chat_completion(ident, got, done, with_logprobs=want_lp)
        else:
            answer = encode.completion(ident, got, done, echo="", with_logprobs=want_lp)
        await _send_json(send, 200, answer)

    async def _stream(self, reply: _Reply, send: Send, gone: asyncio.Event) -> None:
        b, chat, want_lp, ident = self.behaviour, reply.chat, reply.want_lp, reply.ident
        offset = 0
        for i, tok in enumerate(reply.tokens):
            if gone.is_set():
                self.cancelled += 1
                return
            if b.die_after_tokens is not None and i >= b.die_after_tokens:
                raise ConnectionAbortedError("fake backend dies mid-stream")
            if i and b.token_delay_s:
                await asyncio.sleep(b.token_delay_s)
            lps = [self._logprob(tok, reply.top_k)]
            if chat:
                chunk = encode.chat_chunk(
                    ident, content=tok, logprobs=encode.chat_logprobs(lps) if want_lp else None
                )
            else:
                lp = encode.completion_logprobs(lps, offset) if want_lp else None
                chunk = encode.completion_chunk(ident, tok, logprobs=lp)
            offset += len(tok)
            try:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except OSError:
                self.cancelled += 1
                return
        done, finish = reply.finished(), reply.finish
        timings = done.timings.as_dict()
        if chat:
            tail = encode.chat_chunk(ident, finish=finish, timings=timings)
        else:
            tail = encode.completion_chunk(ident, "", finish=finish, timings=timings)
        tail += encode.usage_chunk(ident, done, chat=chat) + encode.SSE_DONE
        await send({"type": "http.response.body", "body": tail, "more_body": False})


@dataclass(frozen=True, slots=True)
class _Reply:
    """What the fake answers to one request, streamed or whole."""

    tokens: list[str]
    finish: str  # "stop", or "length" when max_tokens cut the reply
    chat: bool
    want_lp: bool
    top_k: int
    ident: encode.ResponseIds
    started: float  # perf_counter() at arrival

    def finished(self) -> Finished:
        ms = (time.perf_counter() - self.started) * 1e3
        n = len(self.tokens)
        timings = Timings(prompt_n=1, prompt_ms=0.1, predicted_n=n, total_ms=ms)
        reason = FinishReason.LENGTH if self.finish == "length" else FinishReason.STOP
        return Finished(reason, prompt_tokens=1, completion_tokens=n, timings=timings)


async def _read_json(receive: Receive) -> dict[str, Any]:
    """The request's whole body, parsed ({} when empty)."""
    raw = b""
    while True:
        msg = await receive()
        raw += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    body: dict[str, Any] = json.loads(raw or b"{}")
    return body


async def _until_disconnect(receive: Receive) -> None:
    """Return when the client has gone (the ASGI `http.disconnect` message)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _json(send: Send, status: int, data: dict[str, Any]) -> None:
    await _send_json(send, status, encode.to_json(data))


async def _send_json(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
