"""What is written per request (records.jsonl) and per resource sample (samples.jsonl)."""

from __future__ import annotations

from pydantic import BaseModel, Field, computed_field


class ServerTimings(BaseModel):
    """Prefill/decode as the server reports them, normalised from whichever format it uses."""

    source: str = Field(description="edgellm | llama-server | ollama")
    prompt_n: int | None = None
    prompt_ms: float | None = None
    predicted_n: int | None = None
    predicted_ms: float | None = None
    cache_n: int | None = None
    queue_ms: float | None = None
    ttft_ms: float | None = None
    total_ms: float | None = None

    @property
    def prefill_tps(self) -> float | None:
        if self.prompt_n and self.prompt_ms:
            return self.prompt_n / (self.prompt_ms / 1e3)
        return None

    @property
    def decode_tps(self) -> float | None:
        if self.predicted_n and self.predicted_ms:
            return self.predicted_n / (self.predicted_ms / 1e3)
        return None


class RequestRecord(BaseModel):
    request_id: int
    model: str
    stage: str = "main"
    warmup: bool = False
    conversation_id: str = ""
    turn: int = 0
    start_s: float = Field(description="unix time the request was sent")
    ok: bool = True
    cancelled: bool = Field(
        False, description="stopped by the benchmark itself (Ctrl-C), not by the server"
    )
    status: int | None = None
    error: str | None = None
    ttft_s: float | None = None
    e2e_s: float | None = None
    itl_s: list[float] = Field(default_factory=list, description="gaps between content chunks")
    itl_mean_s: float | None = Field(None, description="decode time / (completion tokens - 1)")
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    chunks: int = 0
    finish_reason: str | None = None
    client_prefill_tps: float | None = Field(None, description="prompt tokens / TTFT")
    client_decode_tps: float | None = Field(None, description="(tokens - 1) / (last - first)")
    server: ServerTimings | None = None
    server_prefill_tps: float | None = None
    server_decode_tps: float | None = None
    output: str = ""
    energy_j: float | None = None

    @property
    def context_tokens(self) -> int | None:
        return self.prompt_tokens

    @computed_field  # type: ignore[prop-decorator]
    @property
    def cached_tokens(self) -> int | None:
        """Prompt tokens the server reused from its cache (`timings.cache_n`, which EdgeLLM
        also sends as `usage.prompt_tokens_details.cached_tokens`); None: not reported."""
        return self.server.cache_n if self.server is not None else None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def prefilled_tokens(self) -> int | None:
        """Prompt tokens the server evaluated (`timings.prompt_n`); None: not reported."""
        if self.server is not None and self.server.prompt_n is not None:
            return self.server.prompt_n
        if self.prompt_tokens is not None and self.cached_tokens is not None:
            return self.prompt_tokens - self.cached_tokens
        return None


class ResourceSample(BaseModel):
    t_s: float = Field(description="unix time")
    source: str = Field(description="pid:<n> or the /metrics URL")
    cpu_percent: float = Field(description="100 = one core busy")
    rss_bytes: int
    active_requests: int = 0
    phase: str = Field("idle", description="idle | prefill | decode (from the active requests)")
