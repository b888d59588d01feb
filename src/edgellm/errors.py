"""Exceptions shared across EdgeLLM. The API layer maps each to an OpenAI-style error."""

from __future__ import annotations


class EdgeLLMError(Exception):
    """Base class: every error EdgeLLM raises on purpose derives from it."""

    status_code = 500
    error_type = "server_error"
    code: str | None = None
    param: str | None = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if param is not None:
            self.param = param


class InvalidRequestError(EdgeLLMError):
    status_code = 400
    error_type = "invalid_request_error"


class ContextLengthExceededError(InvalidRequestError):
    code = "context_length_exceeded"


class ModelNotFoundError(EdgeLLMError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "model_not_found"
    param = "model"

    @classmethod
    def unknown(cls, name: str, available: list[str]) -> ModelNotFoundError:
        """The 404 for a name no model answers to (the client's name shortened: it is echoed)."""
        shown = name if len(name) <= 100 else name[:100] + "..."
        return cls(f"The model '{shown}' does not exist. Available: {', '.join(available)}")


class ModelUnavailableError(EdgeLLMError):
    """A model reference that is valid but cannot be obtained here (offline hub, bad checksum)."""

    status_code = 503
    error_type = "server_error"
    code = "model_unavailable"


class OverloadedError(EdgeLLMError):
    """The FIFO queue is full: the caller should retry after `retry_after` seconds."""

    status_code = 429
    error_type = "rate_limit_error"
    code = "queue_full"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotReadyError(EdgeLLMError):
    status_code = 503
    error_type = "server_error"
    code = "not_ready"
