"""The one interface every backend implements, and the event stream it returns."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from edgellm.config import Feature
from edgellm.engine.embedding import EmbeddingResult
from edgellm.engine.types import GenerationEvent
from edgellm.gateway.health import ReplicaState
from edgellm.gateway.request import GatewayRequest
from edgellm.wire.echo import Echo
from edgellm.wire.embeddings import EmbeddingRequest


class EventStream(Protocol):
    """Engine events (TextDelta..., then Finished or Failed). `cancel()` stops the upstream."""

    def cancel(self) -> None: ...

    def __aiter__(self) -> AsyncIterator[GenerationEvent]: ...


class Backend(Protocol):
    """One replica of one model."""

    id: str  # e.g. "engine:smollm2-135m-instruct" or "http://10.0.0.5:8080/v1"
    kind: str
    state: ReplicaState
    first_token_timeout_s: float | None

    async def open(self, call: GatewayRequest) -> tuple[EventStream, Echo]:
        """Start the generation; raise before any token on rejection. Returns the stream and the
        echoed prompt (completions with `echo`: its text, and its tokens' log-probs when asked
        for, filled before the stream's first event)."""
        ...

    def lacks(self, needs: frozenset[Feature]) -> frozenset[Feature]:
        """Which of a request's needs this replica would not honour (it is skipped for it)."""
        ...

    def first_event_timeout(self, call: GatewayRequest) -> float | None:
        """The longest wait for the first event of `call` before it counts as a timeout."""
        ...

    async def embed(self, body: EmbeddingRequest) -> EmbeddingResult:
        """The request's embeddings (raise on failure; `EmbeddingsUnsupported` if this replica
        has no embeddings endpoint)."""
        ...

    async def check_health(self) -> bool: ...

    def context_length(self) -> int | None: ...

    def count_tokens(self, messages: list[dict[str, Any]]) -> int:
        """Prompt tokens of these chat messages (exact in-process, estimated over HTTP)."""
        ...
