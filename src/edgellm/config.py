"""EdgeLLM's one configuration schema (pydantic v2).

The node server, `edgellm serve`, the gateway and the deployment renderer all read this schema; a
YAML file, environment variables (`EDGELLM_...`) and CLI flags fill it in. The routing policies'
own fields are declared beside each policy (`edgellm.gateway.policies`), on `PolicyConfig`.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, cast

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from edgellm.errors import EdgeLLMError

DEFAULT_MAX_TOKENS = 500  # the paper's generation cap
MAX_ESCALATION_DEADLINE_S = 600.0  # longer than any first token is worth waiting for


_M = TypeVar("_M", bound=BaseModel)


class ConfigError(EdgeLLMError):
    status_code = 400
    error_type = "invalid_request_error"


class EngineConfig(BaseModel):
    """How one model is loaded and scheduled on a node."""

    model_config = ConfigDict(extra="forbid")

    n_ctx: int = Field(8192, ge=128, description="context window (capped at the model's own)")
    n_threads: int = Field(0, ge=0, description="0 = one per CPU available to the process")
    n_batch: int = Field(512, ge=1, description="prompt tokens evaluated per llama_decode call")
    n_ubatch: int = Field(512, ge=1)
    seed: int | None = Field(
        None, description="sampling seed for requests that give none (None: random per request)"
    )
    flash_attn: bool | None = Field(None, description="None lets llama.cpp decide")
    parallel: int = Field(
        1, ge=1, le=64, description="slots decoded together (continuous batching when > 1)"
    )
    kv_unified: bool = Field(
        False,
        description=(
            "with parallel > 1: one KV cache of n_ctx cells shared by all slots (less memory, "
            "but a stream attends over the cells of idle slots' cached conversations) instead "
            "of n_ctx cells per slot (llama-server's default layout)"
        ),
    )
    max_queue: int = Field(32, ge=0, description="requests that may wait; more get 429")
    default_max_tokens: int = Field(DEFAULT_MAX_TOKENS, ge=1)


class EmbeddingConfig(BaseModel):
    """How a model that serves `/v1/embeddings` embeds (a second llama.cpp context on the same
    weights: its own KV cache, its own worker thread)."""

    model_config = ConfigDict(extra="forbid")

    n_ctx: int = Field(512, ge=8, description="the most tokens one input may have")
    n_batch: int = Field(
        128,
        ge=8,
        description="tokens per llama_decode for models pooled by EdgeLLM (decoder-only: mean "
        "pooling); llama.cpp computes n_vocab logits per token of a batch, so this sets the "
        "context's memory (n_vocab x n_batch x 4 bytes)",
    )
    n_seq_max: int = Field(32, ge=1, le=256, description="inputs per llama_decode, at most")
    n_threads: int = Field(0, ge=0, description="0 = one per CPU available to the process")
    pooling: Literal["model", "mean", "cls", "last"] = Field(
        "model",
        description="model: the GGUF's <arch>.pooling_type (mean when it declares none, as "
        "decoder-only chat models do); mean, cls, last: llama.cpp pools, whatever the GGUF says",
    )
    max_queue: int = Field(32, ge=0, description="embedding requests that may wait; more get 429")


Capability = Literal["generation", "embeddings"]
CAPABILITIES: tuple[Capability, ...] = ("generation", "embeddings")


def _generation_only() -> list[Capability]:
    return ["generation"]


def _check_serves(v: list[Capability]) -> list[Capability]:
    if len(set(v)) != len(v):
        raise ValueError("each capability at most once")
    return v


Tier = Literal["edge-small", "edge-large", "cloud"]
# What a request may need of the server that answers it, beyond plain text generation: the
# gateway sends it only to replicas whose `supports` lists all it needs.
Feature = Literal["logprobs", "echo", "structured_output", "grammar", "tools"]
FEATURES: tuple[Feature, ...] = ("logprobs", "echo", "structured_output", "grammar", "tools")
TIERS: tuple[Tier, ...] = ("edge-small", "edge-large", "cloud")
_NAME = r"^[A-Za-z0-9._:/-]+$"


class ModelConfig(BaseModel):
    """A model served by this process: a name clients use and where its weights come from."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=_NAME)
    source: str = Field(description="bundled name, path to a .gguf, or repo_id/file.gguf")
    aliases: list[str] = Field(default_factory=list)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    serves: list[Capability] = Field(
        default_factory=_generation_only,
        min_length=1,
        description="generation (chat and text completions), embeddings (/v1/embeddings), or "
        "both; a model that only embeds gets no generation context",
    )
    embeddings: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    # gateway view of the model
    tier: Tier = "edge-small"
    cost_per_1k_tokens: float = Field(0.0, ge=0.0)
    context_length: int | None = Field(None, ge=1, description="None: the engine's n_ctx")

    _serves = field_validator("serves")(_check_serves)

    @model_validator(mode="before")
    @classmethod
    def _bundled_serves(cls, data: Any) -> Any:
        """A bundled model serves what BUNDLED_SERVES says unless `serves` is given."""
        if isinstance(data, dict) and "serves" not in data:
            serves = BUNDLED_SERVES.get(str(data.get("source")))
            if serves is not None:
                return {**data, "serves": list(serves)}
        return data


class ServerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="larger bodies get 413")


BUNDLED_MODELS = ("smollm2-135m-instruct", "gemma3-270m")
# What a bundled model serves unless its config says: SmolLM2 also embeds (its embedding context
# adds 24 MiB, 70 MiB once llama.cpp's output buffers have grown: benchmarks/embeddings.py);
# Gemma 3's 262k-token vocabulary makes those buffers (n_vocab logits per token of a batch in
# embedding mode) 5x as large, so it only generates.
BUNDLED_SERVES: dict[str, list[Capability]] = {
    "smollm2-135m-instruct": ["generation", "embeddings"],
    "gemma3-270m": ["generation"],
}


def bundled_model_configs() -> list[ModelConfig]:
    tiers: tuple[Tier, ...] = ("edge-small", "edge-large")
    return [
        ModelConfig(name=n, source=n, tier=t) for n, t in zip(BUNDLED_MODELS, tiers, strict=True)
    ]


# -- gateway: remote backends, routing policies, router settings, auth -------------------------


class HttpBackendConfig(BaseModel):
    """Replicas reached over the OpenAI HTTP API: EdgeLLM nodes, llama-server, Ollama, vLLM, or a
    cloud API. Give `url`, several `urls`, or a `dns` name whose addresses are the replicas (a
    Kubernetes headless Service), re-resolved every `resolve_interval_s`."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(None, description="base URL including /v1, e.g. http://node:8080/v1")
    urls: list[str] = Field(default_factory=list)
    dns: str | None = Field(None, description="host name resolving to one address per replica")
    port: int = Field(8080, ge=1, le=65535, description="with `dns`")
    scheme: Literal["http", "https"] = "http"
    path: str = Field("/v1", description="with `dns`: the API prefix")
    resolve_interval_s: float = Field(10.0, gt=0)
    model: str | None = Field(None, description="the upstream model name (default: ours)")
    api_key_env: str | None = Field(
        None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="environment variable with the key"
    )
    health_path: str | None = Field(
        "/health", description="GET relative to the server root; None disables active checks"
    )
    max_concurrency: int = Field(4, ge=1, description="outstanding requests before saturated")
    connect_timeout_s: float = Field(2.0, gt=0)
    timeout_s: float = Field(300.0, gt=0, description="whole request")
    first_token_timeout_s: float = Field(60.0, gt=0)
    supports: list[Feature] = Field(
        default_factory=lambda: list(FEATURES),
        description="what the upstream honours: logprobs, echo (prompt log-probs), "
        "structured_output (response_format, json_schema), grammar (GBNF), tools; a request "
        "needing one it lacks goes to a replica that has it (EdgeLLM nodes: all; "
        "docs/gateway.md lists other servers')",
    )
    upstream_streaming: Literal["auto", "always"] = Field(
        "auto",
        description="auto: a non-streamed request whose route reads no tokens as they arrive "
        "(not a cascade) is sent upstream non-streamed and waits up to timeout_s for the whole "
        "answer; always: every request streams upstream, so first_token_timeout_s applies too",
    )

    @field_validator("url", "urls")
    @classmethod
    def _check_url(cls, v: str | list[str] | None) -> str | list[str] | None:
        for u in [v] if isinstance(v, str) else v or []:
            if not re.match(r"^https?://[^/\s]+", u):
                raise ValueError(f"{u!r} is not an http(s) URL")
        return v

    @model_validator(mode="after")
    def _one_kind(self) -> HttpBackendConfig:
        given = [k for k, v in (("url", self.url), ("urls", self.urls), ("dns", self.dns)) if v]
        if len(given) != 1:
            raise ValueError("give exactly one of url, urls, dns")
        return self

    def static_urls(self) -> list[str]:
        return [self.url] if self.url else list(self.urls)


class RemoteModelConfig(BaseModel):
    """A model served elsewhere; the gateway forwards to its replicas."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=_NAME)
    aliases: list[str] = Field(default_factory=list)
    tier: Tier = "cloud"
    cost_per_1k_tokens: float = Field(0.0, ge=0.0)
    context_length: int = Field(8192, ge=1)
    backends: list[HttpBackendConfig] = Field(min_length=1)
    serves: list[Capability] = Field(
        default_factory=_generation_only,
        min_length=1,
        description="what its replicas serve: generation, embeddings (/v1/embeddings: EdgeLLM "
        "nodes, llama-server started with --embeddings, OpenAI), or both",
    )

    _serves = field_validator("serves")(_check_serves)


class PolicyConfig(BaseModel):
    """What every routing policy's config has. Each policy's own config class subclasses it in
    the policy's file (`edgellm.gateway.policies`), with `kind: Literal["<its name>"]`, and is
    registered there under that name together with the policy."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=_NAME, description="the `model` value that uses it")
    models: list[str] = Field(
        default_factory=list, description="candidates, smallest tier first (default: all)"
    )
    kind: str  # after name and models: a dumped entry reads as it is written


# The config classes of the policy kinds, by kind. The policy modules add theirs (beside their
# implementation, so a policy is one file); this module cannot import them, being the schema
# they import, so it imports the policy package by name the first time it validates a policy.
POLICY_CONFIGS: dict[str, type[PolicyConfig]] = {}
POLICY_PACKAGE = "edgellm.gateway.policies"


def policy_configs() -> dict[str, type[PolicyConfig]]:
    """The registered policy config classes by kind, the built-in policies' included."""
    importlib.import_module(POLICY_PACKAGE)
    return POLICY_CONFIGS


def _policy_config(value: Any, handler: ValidatorFunctionWrapHandler) -> PolicyConfig:
    if isinstance(value, PolicyConfig):
        return value
    if not isinstance(value, dict):
        return cast(PolicyConfig, handler(value))  # pydantic's own error for a non-mapping
    kinds = policy_configs()
    kind = value.get("kind")
    config = kinds.get(kind) if isinstance(kind, str) else None
    if config is None:
        raise PydanticCustomError(
            "policy_kind",
            "unknown policy kind {kind}; known: {known}",
            {"kind": repr(kind), "known": ", ".join(sorted(kinds))},
        )
    return config.model_validate(value)


# A policy entry validates as the config class of its `kind` (errors name the entry's fields,
# e.g. policies.0.markers.0.pattern) and dumps with that class's fields.
AnyPolicyConfig = Annotated[SerializeAsAny[PolicyConfig], WrapValidator(_policy_config)]


class ScorerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(
        "mean_logprob", description="mean_logprob, min_logprob, neg_entropy, logistic"
    )
    path: Path | None = Field(None, description="trained weights (logistic)")


class _OnlineThresholdBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state_path: Path | None = Field(
        None, description="JSON file the rule's state is kept in across restarts (None: memory)"
    )
    save_interval_s: float = Field(
        10.0, ge=0, description="the state file is rewritten at most this often (0: every change)"
    )
    answers: int = Field(
        10_000, ge=0, le=1_000_000, description="answer ids remembered for POST /v1/feedback"
    )
    answer_ttl_s: float = Field(3600.0, gt=0, description="how long an answer may be rated")


class TargetRateThresholdConfig(_OnlineThresholdBase):
    """Hold the escalation rate at `rate`: the threshold is that quantile of recent scores."""

    kind: Literal["target_rate"] = "target_rate"
    rate: float = Field(gt=0, lt=1, description="the fraction of answers to escalate")
    window: int = Field(100, ge=10, le=100_000, description="recent first-tier scores kept")
    min_samples: int = Field(20, ge=1, description="scores seen before the quantile is used")


class FeedbackThresholdConfig(_OnlineThresholdBase):
    """Learn P(the first tier's answer is right | score) from outcomes; escalate where the
    larger tier's expected gain exceeds the price of an escalation."""

    kind: Literal["feedback"] = "feedback"
    escalation_cost: float = Field(
        0.05, ge=0, le=1, description="the price of an escalation, in wrong answers"
    )
    min_feedback: int = Field(30, ge=1, description="outcomes needed before the rule moves")
    forgetting: float = Field(
        0.998, gt=0.9, le=1, description="weight kept by past outcomes per new one (drift)"
    )
    optimism: float = Field(
        1.0,
        ge=0,
        le=10,
        description="standard errors subtracted from P(right) (a lower confidence bound: "
        "escalate while unsure)",
    )
    window: int = Field(500, ge=10, le=100_000, description="recent scores the threshold spans")


OnlineThresholdConfig = Annotated[
    TargetRateThresholdConfig | FeedbackThresholdConfig, Field(discriminator="kind")
]


class AffinitySettings(BaseModel):
    """Cache-aware replica choice (gateway/affinity.py, docs/gateway.md)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="false: least outstanding, round-robin among equals")
    block_bytes: int = Field(
        128, ge=16, le=65536, description="prompt text hashed per block (matches count blocks)"
    )
    capacity_tokens: int = Field(
        16384,
        ge=1,
        description="prompt tokens a replica is assumed to keep cached (its slots' n_ctx cells "
        "and saved-state LRU; shrunk when answers report fewer cached tokens than expected)",
    )
    min_cached_bytes: int = Field(
        128, ge=1, description="a shorter expected prefix does not steer the choice"
    )
    balance: float = Field(
        1.25,
        ge=1.0,
        description="bounded loads: the cached replica takes the request unless its "
        "outstanding requests would then exceed balance x the mean (rounded up)",
    )
    max_blocks: int = Field(100_000, ge=1, description="blocks indexed per model, at most")


class RouterSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default_policy: str = Field("auto", description="the policy `model: auto` uses")
    retries: int = Field(2, ge=0, description="extra rounds over the candidates before giving up")
    backoff_s: float = Field(0.05, ge=0, description="doubles every round")
    failure_threshold: int = Field(3, ge=1, description="consecutive failures that open a circuit")
    cooldown_s: float = Field(10.0, ge=0, description="an open circuit rests this long")
    health_interval_s: float = Field(5.0, gt=0)
    conversations: int = Field(1000, ge=0, description="histories kept (least recently used go)")
    affinity: AffinitySettings = Field(default_factory=AffinitySettings)


class ApiKeyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hex SHA-256 of the key")
    requests_per_minute: float = Field(600.0, gt=0)
    burst: int = Field(20, ge=1)
    tokens_per_minute: float | None = Field(
        None,
        gt=0,
        description="prompt + completion tokens of chat and text completions per minute, "
        "charged when an answer finishes (a key that has spent more waits until it is back "
        "in credit); None: no token limit",
    )


class AuthConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[ApiKeyConfig] = Field(default_factory=list, description="empty: no auth")


class EdgeLLMConfig(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="EDGELLM_", env_nested_delimiter="__", extra="forbid"
    )

    server: ServerConfig = Field(default_factory=ServerConfig)
    models: list[ModelConfig] = Field(default_factory=bundled_model_configs)
    remote_models: list[RemoteModelConfig] = Field(default_factory=list)
    policies: list[AnyPolicyConfig] = Field(default_factory=list)
    router: RouterSettings = Field(default_factory=RouterSettings)
    auth: AuthConfig = Field(default_factory=AuthConfig)

    @model_validator(mode="after")
    def _check_names(self) -> EdgeLLMConfig:
        seen: set[str] = set()
        every: list[ModelConfig | RemoteModelConfig] = [*self.models, *self.remote_models]
        for m in every:
            for key in (m.name, *m.aliases):
                if key in seen:
                    raise ValueError(f"model name or alias {key!r} is used twice")
                seen.add(key)
        models = {m.name for m in every}
        for i, p in enumerate(self.policies):
            if p.name in seen:
                raise ValueError(f"policies.{i}.name: {p.name!r} is also a model name")
            unknown = [m for m in p.models if m not in models]
            if unknown:
                raise ValueError(f"policies.{i}.models: unknown models {unknown}")
            embed_only = [
                m.name for m in every if m.name in p.models and "generation" not in m.serves
            ]
            if embed_only:
                raise ValueError(
                    f"policies.{i}.models: {embed_only} serve embeddings only (a policy routes "
                    "generation)"
                )
        return self

    @classmethod
    def from_yaml(cls, path: Path) -> EdgeLLMConfig:
        return load_yaml(cls, path, "config")


def load_yaml(model: type[_M], path: Path, what: str) -> _M:
    """`model` from a YAML file (empty: all defaults), every failure a ConfigError naming the
    file (`what` it is) and, for a validation error, each field's path in the YAML. `model(...)`
    rather than `model_validate`, so that a settings class still reads its environment."""
    try:
        data: Any = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    try:
        return model(**data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {format_validation_error(exc)}") from exc


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem, each naming its path in the YAML (e.g. models.0.engine.n_ctx)."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
