"""ASGI middleware: reject request bodies over a size limit with 413, before they are parsed.

Checks Content-Length up front, and counts bytes as they arrive for chunked uploads.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgellm.wire.encode import error_json


class BodyTooLarge(HTTPException):
    """Raised while the body streams in. An HTTPException, because FastAPI turns any other error
    raised during body parsing into a generic 400."""

    code = "body_too_large"

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body exceeds the {max_bytes}-byte limit")


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if declared_too_large(scope, self.max_bytes):
            await self._reject(send)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:  # raised outside a route, where no exception handler sees it
            if not started:
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        await reject_too_large(send, self.max_bytes)


def declared_too_large(scope: Scope, max_bytes: int) -> bool:
    """Whether the request's Content-Length is over `max_bytes`."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value) > max_bytes
            except ValueError:
                return False
    return False


async def reject_too_large(send: Send, max_bytes: int) -> None:
    """The 413 answer, sent before the body is parsed."""
    error = BodyTooLarge(max_bytes)
    body = error_json(413, error.detail, code=error.code)
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
