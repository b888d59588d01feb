"""The HTTP error plumbing, on a small app with no model behind it."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from edgellm.api.error_handlers import install_error_handlers
from edgellm.api.limits import BodySizeLimit
from edgellm.errors import ModelNotFoundError, OverloadedError


class Body(BaseModel):
    text: str
    count: int


def make_app(limit: int = 2048) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=limit)

    @app.post("/echo")
    async def echo(body: Body) -> dict[str, int]:
        return {"length": len(body.text) * body.count}

    @app.get("/missing")
    async def missing() -> None:
        raise ModelNotFoundError("The model 'x' does not exist")

    @app.get("/busy")
    async def busy() -> None:
        raise OverloadedError("busy", retry_after=2.2)

    @app.get("/bug")
    async def bug() -> None:
        raise ZeroDivisionError

    return app


def test_declared_and_streamed_oversized_bodies_are_413() -> None:
    client = TestClient(make_app())
    ok = client.post("/echo", json={"text": "abc", "count": 2})
    assert ok.status_code == 200 and ok.json() == {"length": 6}
    big = {"text": "x" * 5000, "count": 1}
    r = client.post("/echo", json=big)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "body_too_large"

    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"text": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'", "count": 1}'

    r = client.post("/echo", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_error_statuses_and_bodies() -> None:
    client = TestClient(make_app(), raise_server_exceptions=False)
    r = client.post("/echo", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_json"
    r = client.post("/echo", json={"text": "a"})
    assert r.status_code == 422 and r.json()["error"]["param"] == "count"
    r = client.get("/missing")
    assert r.status_code == 404
    assert r.json()["error"] == {
        "message": "The model 'x' does not exist",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }
    r = client.get("/busy")
    assert r.status_code == 429 and r.headers["retry-after"] == "3"
    r = client.get("/bug")
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
