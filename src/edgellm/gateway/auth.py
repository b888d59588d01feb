"""API keys (stored as SHA-256 hashes) and per-key token-bucket rate limits, as ASGI middleware.

Two limits per key: requests per minute (a bucket that each request takes one from, with a burst)
and, optionally, model tokens per minute. A request's model tokens are known only when its answer
ends, so they are charged then (`TOKEN_METER` in the scope) and may take the bucket below zero;
a key in debt is refused (429 with `Retry-After`) until the refill brings it back above zero.

Keys never appear in logs or errors; only the key's configured name does.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from edgellm.config import ApiKeyConfig, AuthConfig
from edgellm.gateway.metrics import GatewayMetrics
from edgellm.wire.encode import error_json

_OPEN_PATHS = {"/health", "/metrics"}
ADMITTED = "edgellm.admitted"  # scope key: the request's key was already checked (and charged)
TOKEN_METER = "edgellm.token_meter"  # scope key: charge(n) for the key's tokens (limit, metrics)


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

    @classmethod
    def per_minute(cls, amount: float) -> TokenBucket:
        """A bucket of `amount` a minute that can hold a minute's worth."""
        return cls(amount / 60.0, amount, amount, time.monotonic())

    def _refill(self, now: float | None) -> None:
        now = time.monotonic() if now is None else now
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, now: float | None = None) -> float:
        """0 if a request may go now, else the seconds until it may."""
        self._refill(now)
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate

    def charge(self, amount: int, now: float | None = None) -> None:
        """Take `amount` after the fact, going into debt if need be."""
        self._refill(now)
        self.tokens -= amount

    def in_debt(self, now: float | None = None) -> float:
        """0 unless the bucket is below zero, else the seconds until it is back to zero."""
        self._refill(now)
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class ApiKeyAuth:
    def __init__(
        self,
        app: ASGIApp,
        config: AuthConfig,
        shared: ApiKeyAuth | None = None,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.app = app
        self.keys = {k.sha256: k for k in config.keys}
        self.metrics: GatewayMetrics | None = shared.metrics if shared else metrics
        # `shared`: the fast path's checks, so that a key has one pair of buckets whichever path
        # its requests take
        self.buckets: dict[str, TokenBucket] = (
            shared.buckets if shared else {k.name: TokenBucket.of(k) for k in config.keys}
        )
        self.token_buckets: dict[str, TokenBucket] = (
            shared.token_buckets
            if shared
            else {
                k.name: TokenBucket.per_minute(k.tokens_per_minute)
                for k in config.keys
                if k.tokens_per_minute is not None
            }
        )
        self.meters: dict[str, Callable[[int], None]] = (
            shared.meters if shared else {k.name: self._meter(k.name) for k in config.keys}
        )

    def _meter(self, key: str) -> Callable[[int], None]:
        """What charging `n` tokens to `key` does: its token bucket, its usage counter."""
        bucket = self.token_buckets.get(key)
        metrics = self.metrics

        def charge(n: int) -> None:
            if bucket is not None:
                bucket.charge(n)
            if metrics is not None:
                metrics.count_key_tokens(key, n)

        return charge

    def _refused(self, key: str, limit: str) -> None:
        if self.metrics is not None:
            self.metrics.key_refusals.labels(key, limit).inc()

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
        tokens = self.token_buckets.get(cfg.name)
        if tokens is not None and (debt := tokens.in_debt()) > 0:
            self._refused(cfg.name, "tokens")
            await _reject(
                send,
                429,
                f"token rate limit of {cfg.tokens_per_minute:g} tokens/minute for key "
                f"'{cfg.name}' exceeded",
                "rate_limit_exceeded",
                retry_after=debt,
            )
            return False
        wait = self.buckets[cfg.name].take()
        if wait > 0:
            self._refused(cfg.name, "requests")
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
        scope[TOKEN_METER] = self.meters[cfg.name]
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
    body = error_json(status, message, code=code)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(max(1, math.ceil(retry_after))).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
