"""`max_tokens: 0` (found by the fuzz suite) asks for the prompt alone: no token is sampled,
as the cap says, and a text completion can still echo the prompt with its log-probs."""

from __future__ import annotations

import pytest

from tests.integration.servers import RunningServer

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m-instruct"


@pytest.mark.parametrize("cap", [0, 1])
def test_a_chat_answer_has_exactly_max_tokens_tokens(smol_server: RunningServer, cap: int) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Count to ten."}],
        "max_completion_tokens": cap,
        "ignore_eos": True,
    }
    with smol_server.http() as http:
        r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["usage"]["completion_tokens"] == cap
    assert out["choices"][0]["finish_reason"] == "length"
    assert (out["choices"][0]["message"]["content"] == "") is (cap == 0)


def test_zero_tokens_with_echo_returns_the_prompt(smol_server: RunningServer) -> None:
    body = {"model": MODEL, "prompt": "The sky is", "max_tokens": 0, "echo": True}
    with smol_server.http() as http:
        r = http.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["choices"][0]["text"] == "The sky is"
    assert out["usage"]["completion_tokens"] == 0
