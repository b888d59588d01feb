"""EdgeLLM's one configuration schema (pydantic v2).

The node server, `edgellm serve` and, later, the gateway and deployment renderer all read this
schema; a YAML file, environment variables (`EDGELLM_...`) and CLI flags fill it in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from edgellm.engine.types import DEFAULT_MAX_TOKENS
from edgellm.errors import EdgeLLMError


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
    max_queue: int = Field(32, ge=0, description="requests that may wait; more get 429")
    default_max_tokens: int = Field(DEFAULT_MAX_TOKENS, ge=1)


class ModelConfig(BaseModel):
    """A model served by this process: a name clients use and where its weights come from."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._:/-]+$")
    source: str = Field(description="bundled name, path to a .gguf, or repo_id/file.gguf")
    aliases: list[str] = Field(default_factory=list)
    engine: EngineConfig = Field(default_factory=EngineConfig)


class ServerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="larger bodies get 413")


BUNDLED_MODELS = ("smollm2-135m-instruct", "gemma3-270m")


def bundled_model_configs() -> list[ModelConfig]:
    return [ModelConfig(name=name, source=name) for name in BUNDLED_MODELS]


class EdgeLLMConfig(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="EDGELLM_", env_nested_delimiter="__", extra="forbid"
    )

    server: ServerConfig = Field(default_factory=ServerConfig)
    models: list[ModelConfig] = Field(default_factory=bundled_model_configs)

    @classmethod
    def from_yaml(cls, path: Path) -> EdgeLLMConfig:
        try:
            data: Any = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        try:
            return cls(**data)
        except ValidationError as exc:
            raise ConfigError(f"{path}: {format_validation_error(exc)}") from exc


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem, each naming its path in the YAML (e.g. models.0.engine.n_ctx)."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
