"""Request fields over HTTP with the openai client against a real node: an unknown field is a
400 in OpenAI's words, an unsupported value a 400 naming its field, a field ignored by design
leaves the answer as it is, and an SDK answer sent back as history is accepted."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.integration.servers import RunningServer

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m-instruct"
ASK = [{"role": "user", "content": "Name a colour."}]


def _chat(client: openai.OpenAI, **extra: Any) -> str:
    got = client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=8, temperature=0, **extra
    )
    return got.choices[0].message.content or ""


def test_an_unknown_field_is_a_400_in_openais_words(smol_server: RunningServer) -> None:
    for path, body in [
        ("/v1/chat/completions", {"model": MODEL, "messages": ASK, "cache_prompt": True}),
        ("/v1/completions", {"model": MODEL, "prompt": "hi", "cache_prompt": True}),
        ("/tokenize", {"content": "hi", "with_pieces": True}),
    ]:
        r = httpx.post(smol_server.url + path, json=body, timeout=60)
        assert r.status_code == 400, (path, r.text)
        error = r.json()["error"]
        assert error["message"] == "Unrecognized request argument supplied: " + (
            "with_pieces" if path == "/tokenize" else "cache_prompt"
        )
        assert error["code"] == "unknown_parameter"


def test_an_unsupported_value_is_a_400_naming_its_field(smol_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        _chat(smol_client, store=True)
    assert err.value.param == "store" and err.value.code == "unsupported_value"
    with pytest.raises(openai.BadRequestError) as err:
        smol_client.completions.create(model=MODEL, prompt="hi", max_tokens=2, best_of=2)
    assert err.value.param == "best_of"


def test_fields_ignored_by_design_leave_the_answer_as_it_is(smol_client: openai.OpenAI) -> None:
    plain = _chat(smol_client)
    assert plain
    ignored = _chat(
        smol_client,
        user="u-1",
        metadata={"site": "pi-3"},
        store=False,
        service_tier="auto",
        prompt_cache_key="k",
        safety_identifier="s",
        prediction={"type": "content", "content": "Blue"},
    )
    assert ignored == plain
    # the control: a field that is honoured does change it
    assert _chat(smol_client, logit_bias={"0": 100}) != plain


def test_an_answer_sent_back_as_history_is_accepted(smol_client: openai.OpenAI) -> None:
    first = smol_client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=8)
    history: list[Any] = [*ASK, first.choices[0].message.model_dump(), ASK[0]]
    again = smol_client.chat.completions.create(model=MODEL, messages=history, max_tokens=8)
    assert again.choices[0].finish_reason in ("stop", "length")
