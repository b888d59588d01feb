"""A replica behind the OpenAI HTTP API: an EdgeLLM node, llama-server, Ollama, vLLM or a cloud.

A request goes upstream as an SSE stream (usage included) when the client streams or the route
reads tokens as they arrive (a cascade), or when the backend is configured with
`upstream_streaming: always`: the gateway sees the first token, can fail over before it, and
cancels by closing the connection. Any other request (a non-streamed one on an explicit model or a
`rules`/`learned`/`load` route) asks the upstream for a whole JSON answer, which becomes the same
events (one text delta with every log-prob, then the final event); it is read completely before
the first event, so a failure anywhere in it still fails over.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from edgellm.config import Feature, HttpBackendConfig
from edgellm.engine.embedding import EmbeddingResult
from edgellm.engine.types import Failed, GenerationEvent
from edgellm.gateway.backends.base import EventStream
from edgellm.gateway.conversations import estimate_tokens
from edgellm.gateway.errors import EmbeddingsUnsupported, UpstreamError
from edgellm.gateway.health import ReplicaState
from edgellm.gateway.request import GatewayRequest
from edgellm.gateway.streams import BufferedEvents
from edgellm.gateway.upstream import HttpClient, HttpClientError, HttpTimeout, Origin, Response
from edgellm.wire import decode
from edgellm.wire.echo import Echo
from edgellm.wire.embeddings import EmbeddingRequest, decode_response
from edgellm.wire.schemas import ChatCompletionRequest, CompletionRequest

_NOT_FORWARDED = {"conversation_id", "messages", "escalation_deadline_s"}  # ours, not upstream's
_ACCEPT_SSE = b"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
_ACCEPT_JSON = b"Content-Type: application/json\r\nAccept: application/json\r\n"


def _json_bytes(data: dict[str, Any]) -> bytes:
    """The upstream's body. orjson refuses integers beyond 64 bits, which the wire schema lets
    through (a seed, or a token id for the upstream to refuse): such a body takes the standard
    encoder, and goes upstream as the client sent it."""
    try:
        return orjson.dumps(data)
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(data, ensure_ascii=False).encode()


class HttpBackend:
    kind = "http"

    def __init__(
        self,
        base_url: str,
        upstream_model: str,
        config: HttpBackendConfig,
        client: httpx.AsyncClient,
        state: ReplicaState,
        upstream: HttpClient | None = None,
    ) -> None:
        self.id = base_url.rstrip("/")
        self.base_url = self.id
        self.upstream_model = upstream_model
        self.config = config
        self.client = client  # health checks (off the hot path)
        self.upstream = upstream or HttpClient()  # generation requests (the hot path)
        self.origin = Origin.parse(self.base_url)
        base = self.origin.base_path.encode()
        self._paths = {True: base + b"/chat/completions", False: base + b"/completions"}
        self.state = state
        self.first_token_timeout_s: float | None = config.first_token_timeout_s
        self._always_stream = config.upstream_streaming == "always"
        self._ctx: int | None = None

    def lacks(self, needs: frozenset[Feature]) -> frozenset[Feature]:
        return needs.difference(self.config.supports)

    def auth_headers(self) -> dict[str, str]:
        if not self.config.api_key_env:
            return {}
        key = os.environ.get(self.config.api_key_env, "")
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _header_lines(self, stream: bool) -> bytes:
        lines = _ACCEPT_SSE if stream else _ACCEPT_JSON
        for name, value in self.auth_headers().items():
            lines += f"{name}: {value}\r\n".encode("latin-1")
        return lines

    def streams(self, call: GatewayRequest) -> bool:
        """Whether `call` goes upstream as an SSE stream (else as one whole JSON answer)."""
        return call.wants_stream or self._always_stream

    def first_event_timeout(self, call: GatewayRequest) -> float | None:
        # a whole answer's first event is its end: only the whole-request limit applies to it
        return self.first_token_timeout_s if self.streams(call) else self.config.timeout_s

    def payload(self, call: GatewayRequest, *, stream: bool = True) -> dict[str, Any]:
        body = call.body
        data = body.model_dump(
            exclude_none=True, exclude_defaults=True, exclude=_NOT_FORWARDED
        )  # messages come from the call: after conversation history and trimming
        data["model"] = self.upstream_model
        if stream:
            data["stream"] = True
            data["stream_options"] = {"include_usage": True}
        else:  # OpenAI rejects stream_options without stream
            data.pop("stream", None)
            data.pop("stream_options", None)
        chat = isinstance(body, ChatCompletionRequest)
        if chat:
            data["messages"] = call.messages
        if call.force_top_logprobs is not None and "logprobs" in self.config.supports:
            if chat:
                data["logprobs"] = True
                data["top_logprobs"] = max(data.get("top_logprobs", 0), call.force_top_logprobs)
            else:
                data["logprobs"] = max(data.get("logprobs", 0), call.force_top_logprobs)
        return data

    async def open(self, call: GatewayRequest) -> tuple[EventStream, Echo]:
        cfg = self.config
        deadline = time.monotonic() + cfg.timeout_s
        stream = self.streams(call)
        body = _json_bytes(self.payload(call, stream=stream))
        # streamed: the longest wait for the first (and every next) chunk; whole: for the answer
        read_timeout = _min(cfg.first_token_timeout_s, cfg.timeout_s) if stream else cfg.timeout_s
        try:
            response = await self.upstream.request(
                self.origin,
                b"POST",
                self._paths[call.is_chat],
                body,
                self._header_lines(stream),
                connect_timeout=_min(cfg.connect_timeout_s, cfg.timeout_s),
                read_timeout=read_timeout,
            )
        except HttpTimeout as exc:
            raise UpstreamError(
                f"timed out ({type(exc).__name__})", status=504, source=self.id, cause=str(exc)
            ) from exc
        except HttpClientError as exc:
            raise UpstreamError(
                f"cannot reach the upstream ({type(exc).__name__})", source=self.id, cause=str(exc)
            ) from exc
        if response.status != 200:
            try:
                raw = await response.read(read_timeout)
            except HttpClientError:
                raw = b""
            finally:
                response.close()
            status = response.status
            raise UpstreamError(
                f"the upstream answered {status}: {decode.error_text(raw)}",
                status=status,
                retryable=status >= 500 or status == 429,
                source=self.id,
            )
        # The upstream's answer starts with the prompt it echoes: the text and the log-probs
        # of a text prompt are cut from it into `echo`, sent once. (A token-id prompt's echo,
        # whose text is not known here, passes through as the upstream wrote it.)
        echo = Echo()  # none
        req = call.body
        if isinstance(req, CompletionRequest) and req.echo and isinstance(req.prompt, str):
            echo = Echo(req.prompt)
        if not stream:
            try:
                raw = await response.read(max(deadline - time.monotonic(), 0.0))
            except HttpTimeout as exc:
                raise UpstreamError("request timed out", status=504, source=self.id) from exc
            except HttpClientError as exc:
                raise UpstreamError(
                    f"answer broke: {type(exc).__name__}", source=self.id, cause=str(exc)
                ) from exc
            finally:
                response.close()
            parsed = _answer_events(raw, self.id, echo=echo)
            return BufferedEvents(parsed), echo
        events = HttpStream(response, self.id, echo=echo, read_timeout=read_timeout)
        events.deadline = deadline
        return events, echo

    async def embed(self, body: EmbeddingRequest) -> EmbeddingResult:
        """POST /embeddings upstream. A replica that answers 404, 405 or 501 does not serve
        embeddings (llama-server without --embeddings answers 501): `EmbeddingsUnsupported`,
        which the router skips without counting a failure."""
        payload = body.model_dump(exclude_none=True, exclude_defaults=True)
        payload["model"] = self.upstream_model
        payload["input"] = body.input
        cfg = self.config
        timeout = httpx.Timeout(cfg.timeout_s, connect=min(cfg.connect_timeout_s, cfg.timeout_s))
        t0 = time.perf_counter()
        try:
            r = await self.client.post(
                self.base_url + "/embeddings",
                content=_json_bytes(payload),
                headers={"Content-Type": "application/json"} | self.auth_headers(),
                timeout=timeout,
            )
        except httpx.TimeoutException as exc:
            raise UpstreamError(
                f"timed out ({type(exc).__name__})", status=504, source=self.id, cause=str(exc)
            ) from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"cannot reach the upstream ({type(exc).__name__})", source=self.id, cause=str(exc)
            ) from exc
        status = r.status_code
        if status in (404, 405, 501):
            raise EmbeddingsUnsupported(
                f"the upstream answered {status}: {decode.error_text(r.content)}",
                status=status,
                retryable=False,
                source=self.id,
            )
        if status != 200:
            raise UpstreamError(
                f"the upstream answered {status}: {decode.error_text(r.content)}",
                status=status,
                retryable=status >= 500 or status == 429,
                source=self.id,
            )
        try:
            vectors, n_tokens, cut = decode_response(r.content, len(body.inputs()))
        except ValueError as exc:
            raise UpstreamError(
                f"not an embeddings answer: {exc}", source=self.id, cause=str(exc)
            ) from exc
        ms = (time.perf_counter() - t0) * 1e3
        return EmbeddingResult(vectors, n_tokens, cut, ms)

    async def check_health(self) -> bool:
        if self.config.health_path is None:
            return True
        root = self.base_url.removesuffix("/v1")
        try:
            r = await self.client.get(root + self.config.health_path, timeout=2.0)
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    def context_length(self) -> int | None:
        return self._ctx

    def count_tokens(self, messages: list[dict[str, Any]]) -> int:
        return estimate_tokens(messages)


def _min(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


class HttpStream:
    """Upstream SSE chunks as engine events."""

    def __init__(
        self,
        response: Response,
        source: str,
        *,
        echo: Echo | None = None,
        read_timeout: float | None = None,
    ) -> None:
        self._response = response
        self._source = source
        self._echo = echo or Echo()  # the upstream echoes the prompt too: send it only once
        self._read_timeout = read_timeout  # the longest wait for the next bytes
        self.deadline = float("inf")  # monotonic time by which the whole answer must be in

    def cancel(self) -> None:
        """Stop the upstream: an unfinished response's connection is closed."""
        self._response.close()

    async def __aiter__(self) -> AsyncIterator[GenerationEvent]:
        # the echo's log-probs come in the first chunk, before any event: `echo` has them
        # by the time the router reads the first event
        reader = decode.StreamReader(strip_echo=self._echo.text, echo_logprobs=self._echo.logprobs)
        response = self._response
        try:
            while (data := await response.next_chunk(self._read_timeout)) is not None:
                if time.monotonic() > self.deadline:
                    yield Failed(
                        UpstreamError("request timed out", status=504, source=self._source)
                    )
                    return
                # after [DONE], read on to the end of the body: a response closed early takes
                # its keep-alive connection with it
                if reader.done:
                    continue
                for delta in reader.feed(data):
                    yield delta
                if reader.error is not None:
                    yield Failed(UpstreamError(reader.error, source=self._source))
                    return
        except HttpTimeout:
            yield Failed(UpstreamError("timed out mid-stream", status=504, source=self._source))
            return
        except HttpClientError as exc:
            yield Failed(
                UpstreamError(
                    f"stream broke: {type(exc).__name__}", source=self._source, cause=str(exc)
                )
            )
            return
        finally:
            response.close()
        finished = reader.finished()
        if finished is None:
            yield Failed(UpstreamError("the stream ended without finishing", source=self._source))
            return
        yield finished


def _answer_events(raw: bytes, source: str, *, echo: Echo | None = None) -> list[GenerationEvent]:
    """A whole chat or text completion as the events its SSE stream would have given: one
    delta with the text and every log-prob (none if both are empty), then Finished; or Failed.
    An echoed prompt is cut from the answer into `echo`."""
    got = decode.answer(raw, strip_echo=echo.text if echo is not None else "")
    if echo is not None and got.echo_logprobs:
        echo.logprobs = list(got.echo_logprobs)
    events: list[GenerationEvent] = [got.delta] if got.delta is not None else []
    events.extend(got.tool_calls)
    if got.finished is None:
        events.append(Failed(UpstreamError(got.error or "no answer", source=source)))
    else:
        events.append(got.finished)
    return events
