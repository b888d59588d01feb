"""The plain-ASGI fast path (`api.fast_path`) answers chat and text completions exactly as the
whole FastAPI stack does: the same requests (good, streamed, malformed, off-schema, unknown model,
oversized, unauthenticated, rate-limited) sent to an app with it and to one without it give the
same status, headers that matter, body and request metrics."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient
from starlette.types import Receive, Scope, Send

from edgellm.api.app import create_app
from edgellm.api.fast_path import FastApp
from edgellm.config import EdgeLLMConfig, ServerConfig
from edgellm.gateway.router import Router
from tests.integration.gateway.harness import Fake, remote, start_fake

KEY, TIGHT_KEY = "sk-parity", "sk-tight"
MAX_BODY = 4096


def _key(name: str, key: str, burst: int) -> dict[str, Any]:
    sha = hashlib.sha256(key.encode()).hexdigest()
    return {"name": name, "sha256": sha, "burst": burst, "requests_per_minute": 1.0}


@pytest.fixture(scope="module")
def fake() -> Iterator[Fake]:
    backend = start_fake()
    yield backend
    backend.served.stop()


class _Counted:
    """The whole FastAPI stack behind the fast path, counting what the fast path hands it."""

    def __init__(self, app: FastApp) -> None:
        self.stack = app.stack
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        await self.stack(scope, receive, send)


def _app(fake: Fake, *, fast: bool) -> tuple[TestClient, _Counted | None]:
    cfg = EdgeLLMConfig(
        models=[],
        remote_models=[remote("m", [fake.base_url], tier="edge-small")],
        auth={"keys": [_key("main", KEY, 100), _key("tight", TIGHT_KEY, 1)]},
    )
    app = cast(FastApp, create_app(Router(cfg, None), ServerConfig(max_body_bytes=MAX_BODY)))
    counted = None
    if fast:
        assert app.fast is not None
        counted = _Counted(app)
        app.fast.app = counted
    else:
        app.fast = None  # every request through middleware, routing and validation
    return TestClient(app, raise_server_exceptions=False), counted


def _chat(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}]} | fields


def _requests() -> list[tuple[str, str, dict[str, str], bytes, bool]]:
    """(what, path, headers, body, served by the fast path itself)."""
    auth = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}

    def js(body: object) -> bytes:
        return json.dumps(body).encode()

    completion = {"model": "m", "prompt": "Once", "max_tokens": 3}
    return [
        ("chat", "/v1/chat/completions", auth, js(_chat(max_tokens=4)), True),
        ("chat logprobs", "/v1/chat/completions", auth,
         js(_chat(logprobs=True, top_logprobs=2)), True),
        ("chat stream", "/v1/chat/completions", auth, js(_chat(stream=True)), True),
        ("chat stream usage", "/v1/chat/completions", auth,
         js(_chat(stream=True, stream_options={"include_usage": True})), True),
        ("completion", "/v1/completions", auth, js(completion), True),
        ("completion stream", "/v1/completions", auth, js(completion | {"stream": True}), True),
        ("unknown model", "/v1/chat/completions", auth, js(_chat(model="nope")), True),
        ("malformed json", "/v1/chat/completions", auth, b'{"model": "m", "messages": [', False),
        ("off schema", "/v1/chat/completions", auth, js(_chat(temperature=5)), False),
        ("no messages", "/v1/chat/completions", auth, js({"model": "m"}), False),
        ("wrong type", "/v1/completions", auth, js({"model": "m", "prompt": {"a": 1}}), False),
        ("text/plain", "/v1/chat/completions", auth | {"content-type": "text/plain"},
         js(_chat()), False),
        ("oversized", "/v1/chat/completions", auth,
         js(_chat(messages=[{"role": "user", "content": "x" * MAX_BODY}])), True),
        ("no key", "/v1/chat/completions", {"content-type": "application/json"}, js(_chat()), True),
        ("wrong key", "/v1/chat/completions", auth | {"authorization": "Bearer sk-wrong"},
         js(_chat()), True),
        ("tight key", "/v1/chat/completions", auth | {"authorization": f"Bearer {TIGHT_KEY}"},
         js(_chat()), True),
        ("rate-limited", "/v1/chat/completions", auth | {"authorization": f"Bearer {TIGHT_KEY}"},
         js(_chat()), True),
    ]  # fmt: skip


_VOLATILE = {"id", "created", "timings"}


def _stable(value: Any) -> Any:
    """An answer without what differs between two runs of the same request: its id, time of
    creation, timings and the measured times in `route`."""
    if isinstance(value, dict):
        return {
            k: (_no_times(v) if k == "route" else _stable(v))
            for k, v in value.items()
            if k not in _VOLATILE
        }
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def _no_times(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _no_times(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_times(v) for v in value]
    return 0.0 if isinstance(value, float) else value


def _body(content_type: str, raw: bytes) -> Any:
    if content_type.startswith("text/event-stream"):
        events = [line[6:] for line in raw.decode().split("\n\n") if line.startswith("data: ")]
        return [e if e == "[DONE]" else _stable(json.loads(e)) for e in events]
    return _stable(json.loads(raw))


_COUNTED = (
    "edgellm_requests_total",
    "edgellm_gateway_key_refusals_total",
    "edgellm_gateway_key_tokens_total",
    "edgellm_gateway_routed_requests_total",
)


def _counters(client: TestClient) -> list[str]:
    text = client.get("/metrics").text
    return sorted(line for line in text.splitlines() if line.startswith(_COUNTED))


def test_fast_path_and_full_stack_answer_alike(fake: Fake) -> None:
    fast_client, counted = _app(fake, fast=True)
    full_client, _ = _app(fake, fast=False)
    assert counted is not None
    with fast_client as fast, full_client as full:
        for what, path, headers, body, on_fast_path in _requests():
            before = counted.calls
            a = fast.post(path, content=body, headers=headers)
            b = full.post(path, content=body, headers=headers)
            assert (what, a.status_code) == (what, b.status_code)
            for name in ("content-type", "retry-after", "x-edgellm-route"):
                assert (what, a.headers.get(name)) == (what, b.headers.get(name))
            ctype = a.headers.get("content-type", "")
            assert (what, _body(ctype, a.content)) == (what, _body(ctype, b.content))
            # the fast path answered it itself, or handed it to the whole stack
            assert (what, counted.calls == before) == (what, on_fast_path)
        assert _counters(fast) == _counters(full)
        assert any('status="429"' in line for line in _counters(fast))


def test_parity_sees_a_difference(fake: Fake) -> None:
    """The comparison above can fail: an answer changed on one side only is told apart."""
    fast_client, _ = _app(fake, fast=True)
    full_client, _ = _app(fake, fast=False)
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    with fast_client as fast, full_client as full:
        a = fast.post("/v1/chat/completions", json=_chat(max_tokens=2), headers=headers)
        b = full.post("/v1/chat/completions", json=_chat(max_tokens=3), headers=headers)
        ctype = a.headers["content-type"]
        assert a.status_code == b.status_code == 200
        assert _body(ctype, a.content) != _body(ctype, b.content)
        full.post("/v1/chat/completions", content=b"{", headers=headers)
        assert _counters(fast) != _counters(full)
