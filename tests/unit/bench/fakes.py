"""A fake OpenAI-compatible (and Ollama-style) server with known, fixed delays, on loopback. Its
OpenAI chunks come from EdgeLLM's own encoder (`wire.encode`); `timings` plays llama-server's,
EdgeLLM's or none."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from edgellm.engine.types import Finished, FinishReason, Timings
from edgellm.wire import encode


@dataclass
class FakeBehaviour:
    ttft_s: float = 0.2
    itl_s: float = 0.05
    tokens: int = 10
    timings: str = "llama-server"  # llama-server | edgellm | none
    fail_every: int = 0  # every Nth request gets a 500
    cut_after: int = 0  # streams stop after N tokens, without a final chunk or [DONE]
    serial: bool = False  # one request at a time: capacity 1 / (ttft + itl * (tokens - 1))


def _words(text: str) -> list[str]:
    return text.split()


def create_fake_app(behaviour: FakeBehaviour) -> FastAPI:
    app = FastAPI()
    counter = {"n": 0}
    busy = asyncio.Lock()

    def timings(prompt_n: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "prompt_n": prompt_n,
            "prompt_ms": behaviour.ttft_s * 1e3,
            "prompt_per_second": prompt_n / behaviour.ttft_s,
            "predicted_n": behaviour.tokens,
            "predicted_ms": behaviour.itl_s * 1e3 * behaviour.tokens,
            "predicted_per_second": 1 / behaviour.itl_s,
            "cache_n": 0,
        }
        if behaviour.timings == "edgellm":
            body |= {"queue_ms": 0.1, "ttft_ms": behaviour.ttft_s * 1e3, "total_ms": 1.0}
        return body

    async def openai_stream(prompt_n: int, chat: bool) -> AsyncIterator[bytes]:
        if behaviour.serial:
            async with busy:
                async for piece in _openai_stream(prompt_n, chat):
                    yield piece
        else:
            async for piece in _openai_stream(prompt_n, chat):
                yield piece

    async def _openai_stream(prompt_n: int, chat: bool) -> AsyncIterator[bytes]:
        ids = encode.ResponseIds.new("fake", "chatcmpl" if chat else "cmpl")
        await asyncio.sleep(behaviour.ttft_s)
        for i in range(behaviour.tokens):
            if behaviour.cut_after and i == behaviour.cut_after:
                return
            if i:
                await asyncio.sleep(behaviour.itl_s)
            if chat:
                yield encode.chat_chunk(ids, content=f"t{i} ")
            else:
                yield encode.completion_chunk(ids, f"t{i} ")
        last = timings(prompt_n) if behaviour.timings != "none" else None
        if chat:
            yield encode.chat_chunk(ids, finish="length", timings=last)
        else:
            yield encode.completion_chunk(ids, "", finish="length", timings=last)
        done = Finished(FinishReason.LENGTH, prompt_n, behaviour.tokens, Timings())
        yield encode.usage_chunk(ids, done, chat=chat, with_timings=False)
        yield encode.SSE_DONE

    def prompt_n_of(body: dict[str, Any]) -> int:
        if "messages" in body:
            return sum(len(_words(m["content"])) for m in body["messages"])
        return len(_words(str(body.get("prompt", ""))))

    def failing() -> bool:
        counter["n"] += 1
        return bool(behaviour.fail_every) and counter["n"] % behaviour.fail_every == 0

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        if failing():
            return JSONResponse({"error": {"message": "boom", "type": "server_error"}}, 500)
        return StreamingResponse(
            openai_stream(prompt_n_of(body), True), media_type="text/event-stream"
        )

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        body = await request.json()
        return StreamingResponse(
            openai_stream(prompt_n_of(body), False), media_type="text/event-stream"
        )

    @app.post("/api/chat")
    async def ollama_chat(request: Request) -> Any:
        body = await request.json()
        prompt_n = prompt_n_of(body)

        async def stream() -> AsyncIterator[str]:
            await asyncio.sleep(behaviour.ttft_s)
            for i in range(behaviour.tokens):
                if i:
                    await asyncio.sleep(behaviour.itl_s)
                msg = {
                    "model": body["model"],
                    "message": {"role": "assistant", "content": f"t{i} "},
                    "done": False,
                }
                yield json.dumps(msg) + "\n"
            yield (
                json.dumps(
                    {
                        "model": body["model"],
                        "message": {"role": "assistant", "content": ""},
                        "done": True,
                        "done_reason": "length",
                        "total_duration": int(
                            (behaviour.ttft_s + behaviour.itl_s * behaviour.tokens) * 1e9
                        ),
                        "load_duration": 1000,
                        "prompt_eval_count": prompt_n,
                        "prompt_eval_duration": int(behaviour.ttft_s * 1e9),
                        "eval_count": behaviour.tokens,
                        "eval_duration": int(behaviour.itl_s * behaviour.tokens * 1e9),
                    }
                )
                + "\n"
            )

        return StreamingResponse(stream(), media_type="application/x-ndjson")

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "fake", "object": "model", "created": 0}]}

    @app.post("/tokenize")
    async def tokenize(request: Request) -> dict[str, Any]:
        body = await request.json()
        # one token per character: exact lengths are easy to check
        return {"tokens": [ord(c) for c in body["content"]]}

    @app.post("/detokenize")
    async def detokenize(request: Request) -> dict[str, Any]:
        body = await request.json()
        return {"content": "".join(chr(t) for t in body["tokens"])}

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(
            "# TYPE process_cpu_seconds_total counter\n"
            f"process_cpu_seconds_total {time.process_time()}\n"
            "# TYPE process_resident_memory_bytes gauge\n"
            "process_resident_memory_bytes 123456789\n"
        )

    return app


@dataclass
class FakeServer:
    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_fake(behaviour: FakeBehaviour) -> FakeServer:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    config = uvicorn.Config(
        create_fake_app(behaviour), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("fake server did not start")
        time.sleep(0.02)
    return FakeServer(f"http://127.0.0.1:{port}", server, thread)
