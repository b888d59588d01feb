"""Gateway failures, as OpenAI-style errors."""

from __future__ import annotations

from edgellm.errors import EdgeLLMError


class UpstreamError(EdgeLLMError):
    """A backend failed. `retryable` errors (connection, 5xx, 429, timeouts) move on to the next
    replica or model if no token has been sent yet."""

    status_code = 502
    error_type = "server_error"
    code = "upstream_error"

    def __init__(self, message: str, *, status: int = 502, retryable: bool = True) -> None:
        super().__init__(message)
        self.status_code = status if status >= 400 else 502
        self.retryable = retryable
        if status == 429:
            self.error_type = "rate_limit_error"
            self.code = "upstream_overloaded"
        elif 400 <= status < 500:
            self.error_type = "invalid_request_error"
            self.code = "upstream_rejected"


class NoBackendError(EdgeLLMError):
    status_code = 503
    error_type = "server_error"
    code = "no_backend_available"


class AuthError(EdgeLLMError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"
