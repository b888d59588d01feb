"""Gateway failures, as OpenAI-style errors.

A client sees which model failed and how, never where its replicas live: an error's `message`
names no address; `detail` (the replica and the underlying exception) is for operators: the log
and each replica's `last_error`.
"""

from __future__ import annotations

from edgellm.errors import EdgeLLMError, NotReadyError, OverloadedError


class UpstreamError(EdgeLLMError):
    """A backend failed. `retryable` errors (connection, 5xx, 429, timeouts) move on to the next
    replica or model if no token has been sent yet."""

    status_code = 502
    error_type = "server_error"
    code = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        status: int = 502,
        retryable: bool = True,
        source: str | None = None,
        cause: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status if status >= 400 else 502
        self.retryable = retryable
        where = f"{source}: " if source else ""
        self.detail = f"{where}{message}" + (f" ({cause})" if cause else "")
        if status == 429:
            self.error_type = "rate_limit_error"
            self.code = "upstream_overloaded"
        elif 400 <= status < 500:
            self.error_type = "invalid_request_error"
            self.code = "upstream_rejected"


class EmbeddingsUnsupported(UpstreamError):
    """A replica answered that it has no embeddings endpoint (404, 405, 501)."""


class NoBackendError(EdgeLLMError):
    status_code = 503
    error_type = "server_error"
    code = "no_backend_available"


class AuthError(EdgeLLMError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


def detail(exc: BaseException) -> str:
    """The operator's text of a failure: with the replica's address where one is known."""
    if isinstance(exc, UpstreamError):
        return exc.detail
    return exc.message if isinstance(exc, EdgeLLMError) else f"{type(exc).__name__}: {exc}"


def outcome_of(exc: BaseException) -> str:
    """A failed attempt's outcome, one of a fixed set (a metric label and the route's word)."""
    if isinstance(exc, OverloadedError) or getattr(exc, "status_code", 0) == 429:
        return "overloaded"
    if getattr(exc, "status_code", 0) == 504:
        return "timeout"
    if isinstance(exc, NotReadyError):
        return "not_ready"
    if isinstance(exc, EdgeLLMError) and 400 <= exc.status_code < 500:
        return "rejected"
    return "error"
