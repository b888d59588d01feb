"""Structured output over HTTP with the official `openai` client against a real node:
`chat.completions.parse` with a pydantic model, `json_object` streamed, llama-server's
`grammar` and `json_schema` fields, and the 400s for what cannot be enforced."""

from __future__ import annotations

import json
import re

import openai
import pytest
from pydantic import BaseModel, Field

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m-instruct"


class Part(BaseModel):
    name: str = Field(max_length=24)
    count: int


class Shipment(BaseModel):
    """Strings and lists are bounded: a 135M model left to ramble inside a string would end by
    max_tokens (a `length` finish) rather than by the grammar."""

    site: str = Field(max_length=24)
    parts: list[Part] = Field(max_length=3)
    express: bool
    note: str | None = Field(max_length=40)


def test_parse_returns_the_pydantic_object(smol_client: openai.OpenAI) -> None:
    parsed = []
    for seed in range(3):
        try:
            r = smol_client.chat.completions.parse(
                model=MODEL,
                messages=[
                    {"role": "user", "content": "Return one shipment of bolts to Oslo as JSON."}
                ],
                response_format=Shipment,
                temperature=0.5,
                seed=seed,
                max_tokens=150,
            )
        except openai.LengthFinishReasonError:
            continue  # cut by max_tokens: reported as such, not as a parsed answer
        message = r.choices[0].message
        assert r.choices[0].finish_reason == "stop"
        assert isinstance(message.parsed, Shipment)
        assert Shipment.model_validate_json(message.content or "") == message.parsed
        parsed.append(message.parsed)
    assert len(parsed) >= 2


def test_json_object_streamed_parses(smol_client: openai.OpenAI) -> None:
    ended = 0
    for seed in range(3):
        stream = smol_client.chat.completions.create(
            model=MODEL,
            messages=[
                {
                    "role": "user",
                    "content": 'Return a JSON object with the keys "name" and "age" for a cat.',
                }
            ],
            response_format={"type": "json_object"},
            temperature=0.5,
            seed=seed,
            max_tokens=100,
            stream=True,
        )
        text, finish = "", None
        for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
        if finish == "stop":
            ended += 1
            assert isinstance(json.loads(text), dict)
        else:
            assert finish == "length"
    assert ended >= 2


def test_llama_server_grammar_and_json_schema_fields(smol_client: openai.OpenAI) -> None:
    r = smol_client.completions.create(
        model=MODEL,
        prompt="The year the first Moon landing happened:",
        max_tokens=8,
        temperature=0.9,
        seed=1,
        extra_body={"grammar": 'root ::= "[" [0-9] "," [0-9] "]"'},
    )
    assert re.fullmatch(r"\[[0-9],[0-9]\]", r.choices[0].text)
    r2 = smol_client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Is the sky blue?"}],
        max_tokens=30,
        temperature=0.0,
        extra_body={
            "json_schema": {
                "type": "object",
                "properties": {"yes": {"type": "boolean"}},
                "required": ["yes"],
            }
        },
    )
    assert isinstance(json.loads(r2.choices[0].message.content or "")["yes"], bool)
    # without the grammar the same request is free text
    free = smol_client.completions.create(
        model=MODEL,
        prompt="The year the first Moon landing happened:",
        max_tokens=8,
        temperature=0.9,
        seed=1,
    )
    assert not re.fullmatch(r"\[[0-9],[0-9]\]", free.choices[0].text)


@pytest.mark.parametrize(
    ("extra", "param", "named"),
    [
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "n",
                        "schema": {
                            "type": "object",
                            "properties": {"n": {"type": "integer", "minimum": 1}},
                            "required": ["n"],
                        },
                    },
                }
            },
            "response_format",
            "minimum",
        ),
        ({"json_schema": {"type": "string", "format": "email"}}, "json_schema", "email"),
        ({"grammar": "root ::= missing"}, "grammar", "grammar"),
        (
            {"grammar": 'root ::= "a"', "response_format": {"type": "json_object"}},
            "grammar",
            "send one",
        ),
    ],
)
def test_what_cannot_be_enforced_is_a_400_naming_it(
    smol_client: openai.OpenAI, extra: dict[str, object], param: str, named: str
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        smol_client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "x"}],
            max_tokens=4,
            extra_body=extra,
        )
    body = err.value.body
    assert isinstance(body, dict)
    assert body["param"] == param and named in body["message"]
