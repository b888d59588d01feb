"""Send one request and measure it from the client: TTFT, inter-token gaps, end-to-end time,
token counts, and the server's own timings when the response carries them.

Two wire protocols, registered by name: `openai` (SSE from `/v1/chat/completions` or
`/v1/completions`, EdgeLLM, llama-server, vLLM, LiteLLM, Ollama's OpenAI layer) and `ollama`
(NDJSON from Ollama's native `/api/chat` / `/api/generate`, whose final object has durations).
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from edgellm.bench.records import RequestRecord
from edgellm.bench.timings import parse_server_timings
from edgellm.engine.types import TextDelta
from edgellm.wire import decode


@dataclass
class RequestSpec:
    model: str
    messages: list[dict[str, str]] | None = None
    prompt: str | list[int] | None = None
    max_tokens: int = 500
    temperature: float = 0.0
    seed: int | None = 0
    ignore_eos: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


TokenCallback = Callable[[RequestRecord], None]


class _Clock:
    """Arrival times of content chunks, turned into the record's latency fields."""

    def __init__(self, record: RequestRecord, on_token: TokenCallback | None) -> None:
        self.record = record
        self.on_token = on_token
        self.t0 = time.perf_counter()
        record.start_s = time.time()
        self.first: float | None = None
        self.last: float | None = None
        self.text: list[str] = []

    def content(self, text: str) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now
            self.record.ttft_s = now - self.t0
        elif self.last is not None:
            self.record.itl_s.append(now - self.last)
        self.last = now
        self.record.chunks += 1
        self.text.append(text)
        if self.on_token:
            self.on_token(self.record)

    def finish(self) -> None:
        r = self.record
        r.e2e_s = time.perf_counter() - self.t0
        r.output = "".join(self.text)
        tokens = r.completion_tokens if r.completion_tokens is not None else r.chunks
        if r.completion_tokens is None:
            r.completion_tokens = r.chunks
        if self.first is not None and self.last is not None and tokens > 1:
            span = self.last - self.first
            if span > 0:
                r.itl_mean_s = span / (tokens - 1)
                r.client_decode_tps = (tokens - 1) / span
        if r.prompt_tokens and r.ttft_s:
            r.client_prefill_tps = r.prompt_tokens / r.ttft_s
        if r.server is not None:
            r.server_prefill_tps = r.server.prefill_tps
            r.server_decode_tps = r.server.decode_tps


_CUT_SHORT = "stream cut short: the server closed it before its final message"


def _error_text(body: bytes) -> str:
    return decode.error_text(body, limit=300)


async def _lines(response: httpx.Response) -> AsyncIterator[str]:
    async for line in response.aiter_lines():
        if line:
            yield line


class WireProtocol(ABC):
    """What every protocol does with a streamed answer: time each content chunk, and fail the
    record on an error status or on a stream that ends before its final message. A protocol
    says how to ask (`request`) and how to read its lines (`read`)."""

    @abstractmethod
    def request(self, spec: RequestSpec) -> tuple[str, dict[str, Any]]:
        """The path and JSON body of the streamed request."""

    @abstractmethod
    async def read(self, lines: AsyncIterator[str], record: RequestRecord, clock: _Clock) -> bool:
        """Read the answer's lines into `record` and `clock`; whether its final message came."""

    async def send(
        self,
        client: httpx.AsyncClient,
        spec: RequestSpec,
        record: RequestRecord,
        on_token: TokenCallback | None = None,
    ) -> None:
        path, body = self.request(spec)
        clock = _Clock(record, on_token)
        async with client.stream("POST", path, json=body) as response:
            record.status = response.status_code
            if response.status_code != 200:
                record.ok, record.error = False, _error_text(await response.aread())
                clock.finish()
                return
            ended = await self.read(_lines(response), record, clock)
        if record.ok and not ended:
            record.ok, record.error = False, _CUT_SHORT
        clock.finish()


class OpenAIProtocol(WireProtocol):
    def request(self, spec: RequestSpec) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {
            "model": spec.model,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": spec.max_tokens,
            "temperature": spec.temperature,
            **spec.extra,
        }
        if spec.seed is not None:
            body["seed"] = spec.seed
        if spec.ignore_eos:
            body["ignore_eos"] = True
        if spec.messages is not None:
            body["messages"] = spec.messages
            return "/v1/chat/completions", body
        body["prompt"] = spec.prompt
        return "/v1/completions", body

    async def read(self, lines: AsyncIterator[str], record: RequestRecord, clock: _Clock) -> bool:
        reader = decode.StreamReader(strict=True)
        async for line in lines:
            for delta in reader.line(line):
                if isinstance(delta, TextDelta) and delta.text:
                    clock.content(delta.text)
            if reader.ended:
                break
        if reader.error is not None:
            record.ok, record.error = False, reader.error
        record.finish_reason = reader.finish_reason
        if reader.timings:
            record.server = parse_server_timings({"timings": reader.timings})
        if reader.usage:
            record.prompt_tokens = reader.usage.get("prompt_tokens")
            record.completion_tokens = reader.usage.get("completion_tokens")
        return reader.done or record.finish_reason is not None


class OllamaProtocol(WireProtocol):
    def request(self, spec: RequestSpec) -> tuple[str, dict[str, Any]]:
        options: dict[str, Any] = {"temperature": spec.temperature, "num_predict": spec.max_tokens}
        if spec.seed is not None:
            options["seed"] = spec.seed
        body: dict[str, Any] = {"model": spec.model, "stream": True, "options": options}
        if spec.messages is not None:
            body["messages"] = spec.messages
            return "/api/chat", body
        if not isinstance(spec.prompt, str):
            raise ValueError("Ollama's /api/generate takes text prompts, not token ids")
        body["prompt"] = spec.prompt
        return "/api/generate", body

    async def read(self, lines: AsyncIterator[str], record: RequestRecord, clock: _Clock) -> bool:
        ended = False
        async for line in lines:
            obj = json.loads(line)
            if "error" in obj:
                record.ok, record.error = False, str(obj["error"])
                break
            text = (obj.get("message") or {}).get("content") or obj.get("response")
            if text:
                clock.content(text)
            if obj.get("done"):
                ended = True
                record.finish_reason = obj.get("done_reason")
                record.server = parse_server_timings(obj)
                record.prompt_tokens = obj.get("prompt_eval_count")
                record.completion_tokens = obj.get("eval_count")
        return ended


PROTOCOLS: dict[str, Callable[[], WireProtocol]] = {
    "openai": OpenAIProtocol,
    "ollama": OllamaProtocol,
}


async def measure(
    client: httpx.AsyncClient,
    spec: RequestSpec,
    record: RequestRecord,
    *,
    api: str = "openai",
    on_token: TokenCallback | None = None,
) -> RequestRecord:
    """Fill `record` for one request; transport errors become `ok=False` records."""
    try:
        await PROTOCOLS[api]().send(client, spec, record, on_token)
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        record.ok = False
        record.error = f"{type(exc).__name__}: {exc}"
        if record.e2e_s is None:
            record.e2e_s = time.time() - record.start_s if record.start_s else None
    return record
