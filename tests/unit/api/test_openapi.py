"""The OpenAPI document says what the app answers: every error status with the OpenAI error
body, event streams, Prometheus text; EdgeLLM's own endpoints take only the documented JSON
types; chat and text completions answer errors the same on the fast path and through FastAPI.

The app has a model configured but never loaded (no lifespan), so requests stop before any
llama.cpp call: 404 for an unknown model, 503 for the loading one.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from edgellm.api.app import create_app
from edgellm.api.openapi import KEYED, MODEL
from edgellm.engine.pool import EnginePool
from tests.integration.servers import smollm2_config

ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}


@pytest.fixture
def app() -> FastAPI:
    return create_app(EnginePool([smollm2_config()]))


@pytest.fixture
def spec(app: FastAPI) -> dict[str, Any]:
    return app.openapi()


def _errors(op: dict[str, Any]) -> set[int]:
    return {int(s) for s, r in op["responses"].items() if int(s) >= 400}


def test_endpoints_naming_a_model_document_every_error_with_the_openai_body(
    spec: dict[str, Any],
) -> None:
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/loglikelihood"):
        op = spec["paths"][path]["post"]
        assert _errors(op) == set(MODEL)
        for status in MODEL:
            content = op["responses"][str(status)]["content"]
            assert content == {"application/json": {"schema": ERROR_REF}}, (path, status)
    for path in ("/tokenize", "/detokenize"):
        assert _errors(spec["paths"][path]["post"]) == set(MODEL)
    for path in ("/v1/models", "/v1/router"):
        assert _errors(spec["paths"][path]["get"]) == set(KEYED)
    # FastAPI's own 422 body (`detail`) is never sent, so it is not documented
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    assert spec["components"]["schemas"]["ErrorResponse"]["required"] == ["error"]


def test_streams_and_metrics_have_their_own_media_types(spec: dict[str, Any], app: FastAPI) -> None:
    for path in ("/v1/chat/completions", "/v1/completions"):
        ok = spec["paths"][path]["post"]["responses"]["200"]["content"]
        assert set(ok) == {"application/json", "text/event-stream"}
        data = ok["text/event-stream"]["schema"]["properties"]["data"]["anyOf"]
        assert data[0] == {"const": "[DONE]"}
        chunk = data[1]["contentSchema"]["anyOf"][0]["$ref"].rsplit("/", 1)[1]
        assert chunk in spec["components"]["schemas"]
    metrics = spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert set(metrics) == {"text/plain"}
    r = TestClient(app).get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize(
    ("path", "good", "bad"),
    [
        ("/tokenize", {"content": "hi", "add_special": False}, {"content": "hi", "add_special": 0}),
        ("/tokenize", {"content": "hi"}, {"content": 5}),
        ("/detokenize", {"tokens": [1, 2]}, {"tokens": ["1", 2]}),
        ("/detokenize", {"tokens": [1]}, {"tokens": [1.0]}),
        (
            "/v1/loglikelihood",
            {"model": "smollm2-135m-instruct", "items": [{"context": "a", "continuation": "b"}]},
            {"model": "smollm2-135m-instruct", "items": [{"context": 1, "continuation": "b"}]},
        ),
    ],
)
def test_own_endpoints_reject_values_of_another_json_type(
    app: FastAPI, path: str, good: dict[str, Any], bad: dict[str, Any]
) -> None:
    client = TestClient(app)
    assert client.post(path, json=good).status_code == 503  # valid: on to the (loading) model
    r = client.post(path, json=bad)
    assert r.status_code == 422
    assert set(r.json()) == {"error"} and r.json()["error"]["code"] == "invalid_value"


def test_openai_endpoints_still_coerce_as_openai_does(app: FastAPI) -> None:
    body = {"model": "smollm2-135m-instruct", "prompt": "hi", "max_tokens": "5", "echo": 0}
    assert TestClient(app).post("/v1/completions", json=body).status_code == 503


CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
ERROR_CASES: list[tuple[str, bytes | dict[str, Any]]] = [
    ("/v1/chat/completions", CHAT | {"model": "no-such-model"}),  # 404
    ("/v1/chat/completions", CHAT | {"model": "smollm2-135m-instruct"}),  # 503, loading
    ("/v1/completions", {"model": "nope", "prompt": [1, 2]}),  # 404
    ("/v1/completions", {"model": "smollm2-135m-instruct", "prompt": "x", "n": 2}),  # 422
    ("/v1/chat/completions", b'{"model": "x", "messages": ['),  # 400, bad JSON
    ("/v1/chat/completions", CHAT | {"model": "smollm2", "temperature": "hot"}),  # 422
]


@pytest.mark.parametrize(("path", "body"), ERROR_CASES)
def test_fast_path_and_fastapi_answer_errors_alike(path: str, body: bytes | dict[str, Any]) -> None:
    answers = []
    for fast in (True, False):
        app = create_app(EnginePool([smollm2_config()]))
        if not fast:
            app.fast = None  # type: ignore[attr-defined]
        client = TestClient(app)
        if isinstance(body, bytes):
            r = client.post(path, content=body, headers={"content-type": "application/json"})
        else:
            r = client.post(path, json=body)
        answers.append((r.status_code, r.headers["content-type"], r.json()))
    assert answers[0] == answers[1]
    assert answers[0][0] >= 400 and set(answers[0][2]) == {"error"}


@pytest.mark.parametrize(
    ("field", "refused", "accepted"),
    [
        ("stop", ["a", ""], ["a", "b"]),
        ("stop", ["a", "b", "c", "d", "e"], ["a", "b", "c", "d"]),
        ("logit_bias", {"x7": 1.0}, {"7": 1.0}),
        ("logit_bias", {"7": 100.5}, {"7": -100.0}),
    ],
)
def test_limits_the_validators_enforce_are_in_the_schema(
    spec: dict[str, Any], field: str, refused: object, accepted: object
) -> None:
    """A fuzzer (or a client) drawing from /openapi.json does not produce what the server
    refuses: each refused value breaks a documented limit, the accepted one keeps to it."""
    schema = spec["components"]["schemas"]["CompletionRequest"]["properties"][field]["anyOf"][-2]
    client = TestClient(create_app(EnginePool([smollm2_config()])))
    body = {"model": "smollm2-135m-instruct", "prompt": "hi", "max_tokens": 1}
    assert client.post("/v1/completions", json=body | {field: refused}).status_code == 422
    assert client.post("/v1/completions", json=body | {field: accepted}).status_code == 503
    if field == "stop":
        assert schema["items"]["minLength"] == 1 and schema["maxItems"] == 4
    else:
        assert schema["propertyNames"] == {"pattern": "^[0-9]{1,10}$"}
        assert schema["additionalProperties"] == {"type": "number", "minimum": -100, "maximum": 100}


def test_an_empty_prompt_is_documented_as_refused(spec: dict[str, Any]) -> None:
    """The engine refuses an empty prompt (400); the schema says so for each of its forms."""
    prompt = spec["components"]["schemas"]["CompletionRequest"]["properties"]["prompt"]["anyOf"]
    assert [p["type"] for p in prompt] == ["string", "array", "array", "array"]
    assert [p.get("minLength", p.get("minItems")) for p in prompt] == [1, 1, 1, 1]
    assert prompt[-1]["items"]["minItems"] == 1  # a list of one token-id prompt (lm-eval's)
