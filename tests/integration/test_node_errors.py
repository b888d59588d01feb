"""Bad input gets OpenAI-style errors with the right status; never a 500, never a hang."""

from __future__ import annotations

import json

import openai
import pytest

from tests.integration.servers import RunningServer

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m-instruct"


def assert_openai_error(body: dict[str, object], error_type: str) -> dict[str, object]:
    assert set(body) == {"error"}
    err = body["error"]
    assert isinstance(err, dict)
    assert err["type"] == error_type
    assert isinstance(err["message"], str) and err["message"]
    return err


def test_malformed_json_is_400(smol_server: RunningServer) -> None:
    with smol_server.http() as http:
        r = http.post(
            "/v1/chat/completions",
            content=b'{"model": "x", "messages": [',
            headers={"content-type": "application/json"},
        )
    assert r.status_code == 400
    err = assert_openai_error(r.json(), "invalid_request_error")
    assert "JSON" in str(err["message"])


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": MODEL}, "messages"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": MODEL, "messages": "hello"}, "messages"),
        (
            {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": "x"},
            "max_tokens",
        ),
        (
            {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "temperature": 9},
            "temperature",
        ),
        ({"model": MODEL, "messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "n": 2}, "n"),
    ],
)
def test_missing_fields_and_wrong_types_are_422(
    smol_server: RunningServer, body: dict[str, object], param: str
) -> None:
    with smol_server.http() as http:
        r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 422
    err = assert_openai_error(r.json(), "invalid_request_error")
    assert err["param"] == param


def test_unknown_model_is_404(smol_client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        smol_client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.status_code == 404
    assert info.value.code == "model_not_found"
    assert "no-such-model" in info.value.message


def test_context_overflow_is_400_naming_the_counts(smol_client: openai.OpenAI) -> None:
    long_text = "word " * 1500  # about 1500 tokens against a 2048-token window
    with pytest.raises(openai.BadRequestError) as info:
        smol_client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": long_text}], max_tokens=1000
        )
    assert info.value.code == "context_length_exceeded"
    message = info.value.message
    assert "2048" in message and "1000" in message and "in the prompt" in message


def test_prompt_alone_over_the_window_is_400(smol_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        smol_client.completions.create(model=MODEL, prompt="word " * 3000)
    assert info.value.code == "context_length_exceeded"


def test_oversized_body_is_413(smol_server: RunningServer) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x" * 300_000}]}
    with smol_server.http() as http:
        r = http.post(
            "/v1/chat/completions",
            content=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 413
        assert_openai_error(r.json(), "invalid_request_error")

        def chunks() -> object:  # no Content-Length: counted as it arrives
            payload = json.dumps(body).encode()
            for i in range(0, len(payload), 65536):
                yield payload[i : i + 65536]

        r = http.post(
            "/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"}
        )
        assert r.status_code == 413


def test_unknown_route_and_method_are_json(smol_server: RunningServer) -> None:
    with smol_server.http() as http:
        r = http.get("/v1/nothing")
        assert r.status_code == 404
        assert_openai_error(r.json(), "invalid_request_error")
        r = http.get("/v1/chat/completions")
        assert r.status_code == 405
        assert_openai_error(r.json(), "invalid_request_error")


def test_too_many_stop_sequences_is_422(smol_client: openai.OpenAI) -> None:
    with pytest.raises(openai.UnprocessableEntityError):
        smol_client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            stop=["a", "b", "c", "d", "e"],
        )
