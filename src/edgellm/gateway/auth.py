"""API keys (stored as SHA-256 hashes) and per-key token-bucket rate limits, as ASGI middleware.

Keys never appear in logs or errors; only the key's configured name does.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from edgellm.api.errors import json_error_bytes
from edgellm.config import ApiKeyConfig, AuthConfig

_OPEN_PATHS = {"/health", "/metrics"}
ADMITTED = "edgellm.admitted"  # scope key: the request's key was already checked (and charged)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(slots=True)
class TokenBucket:
    rate: float  # tokens per second
    capacity: float
    tokens: float
    stamp: float

    @classmethod
    def of(cls, key: ApiKeyConfig) -> TokenBucket:
        return cls(key.requests_per_minute / 60.0, key.burst, key.burst, time.monotonic())

    def take(self, now: float | None = None) -> float:
        """0 if a request may go now, else the seconds until it may."""
        now = time.monotonic() if now is None else now
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class ApiKeyAuth:
    def __init__(
        self, app: ASGIApp, config: AuthConfig, buckets: dict[str, TokenBucket] | None = None
    ) -> None:
        self.app = app
        self.keys = {k.sha256: k for k in config.keys}
        # shared with the fast path's checks: one bucket per key, whichever path a request takes
        self.buckets = (
            buckets if buckets is not None else {k.name: TokenBucket.of(k) for k in config.keys}
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not self.keys
            or scope.get("path") in _OPEN_PATHS
            or scope.get(ADMITTED)
        ):
            await self.app(scope, receive, send)
            return
        if await self.admit(scope, send):
            await self.app(scope, receive, send)

    async def admit(self, scope: Scope, send: Send) -> bool:
        """Check the request's key and take a token from its bucket: True if it may go on
        (marked in the scope, so the check is not repeated), else the 401/429 is sent."""
        if not self.keys:
            return True
        key = _presented_key(scope)
        cfg = self.keys.get(hash_key(key)) if key else None
        if cfg is None:
            await _reject(send, 401, "a valid API key is required", "invalid_api_key")
            return False
        wait = self.buckets[cfg.name].take()
        if wait > 0:
            await _reject(
                send,
                429,
                f"rate limit of {cfg.requests_per_minute:g} requests/minute for key "
                f"'{cfg.name}' exceeded",
                "rate_limit_exceeded",
                retry_after=wait,
            )
            return False
        scope.setdefault("state", {})["api_key_name"] = cfg.name
        scope[ADMITTED] = True
        return True


def _presented_key(scope: Scope) -> str | None:
    for name, raw in scope.get("headers", ()):
        value = bytes(raw)
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        if name == b"x-api-key":
            presented: str = value.decode("latin-1").strip()
            return presented or None
    return None


async def _reject(
    send: Send, status: int, message: str, code: str, retry_after: float | None = None
) -> None:
    body = json_error_bytes(status, message, code=code)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(max(1, math.ceil(retry_after))).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
