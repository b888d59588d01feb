"""Every field the official openai SDK can send is a field of EdgeLLM's request schemas
(honoured, ignored by design, or refused at a non-neutral value), and anything else is
refused: nothing is dropped in silence."""

from __future__ import annotations

import typing
from typing import Any

import pytest
from openai.types import completion_create_params
from openai.types.chat import completion_create_params as chat_create_params
from pydantic import BaseModel, ValidationError

from edgellm.wire.schemas import UNSUPPORTED, ChatCompletionRequest, CompletionRequest

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
TEXT = {"model": "m", "prompt": "hi"}


@pytest.mark.parametrize(
    ("sdk_params", "schema"),
    [
        (chat_create_params.CompletionCreateParamsBase, ChatCompletionRequest),
        (completion_create_params.CompletionCreateParamsBase, CompletionRequest),
    ],
)
def test_every_field_the_sdk_sends_is_known(sdk_params: type, schema: type[BaseModel]) -> None:
    sdk_fields = set(typing.get_type_hints(sdk_params))
    unknown = sdk_fields - set(schema.model_fields) - {"stream"}
    assert not unknown, f"{schema.__name__} would refuse these SDK fields as unknown: {unknown}"


def _errors(schema: type[BaseModel], body: dict[str, Any]) -> list[tuple[str, str]]:
    try:
        schema.model_validate(body)
    except ValidationError as exc:
        return [(e["type"], ".".join(str(p) for p in e["loc"])) for e in exc.errors()]
    return []


@pytest.mark.parametrize(
    ("schema", "base"), [(ChatCompletionRequest, CHAT), (CompletionRequest, TEXT)]
)
def test_an_unknown_field_is_refused_by_name(schema: type[BaseModel], base: dict[str, Any]) -> None:
    assert _errors(schema, base) == []
    assert _errors(schema, base | {"cache_prompt": True}) == [("extra_forbidden", "cache_prompt")]
    nested = base | {"stream_options": {"include_usage": True, "chunk_size": 3}}
    assert _errors(schema, nested) == [("extra_forbidden", "stream_options.chunk_size")]


NEUTRAL_AND_NOT = [
    ("store", False, True),
    ("service_tier", "default", "flex"),
    ("modalities", ["text"], ["text", "audio"]),
    ("reasoning_effort", None, "low"),
    ("verbosity", None, "high"),
    ("audio", None, {"voice": "alloy", "format": "wav"}),
    ("web_search_options", None, {}),
    ("functions", None, [{"name": "f"}]),
    ("function_call", None, "auto"),
    ("prompt_cache_retention", "in_memory", "24h"),
    ("moderation", None, {"model": "omni-moderation-latest"}),
]


@pytest.mark.parametrize(("field", "neutral", "other"), NEUTRAL_AND_NOT)
def test_an_unsupported_field_passes_only_at_its_neutral_value(
    field: str, neutral: object, other: object
) -> None:
    assert _errors(ChatCompletionRequest, CHAT | {field: neutral}) == []
    assert _errors(ChatCompletionRequest, CHAT | {field: other}) == [(UNSUPPORTED, field)]


@pytest.mark.parametrize(("field", "neutral", "other"), [("best_of", 1, 3), ("suffix", "", "}")])
def test_text_completion_fields_at_neutral_values_only(
    field: str, neutral: object, other: object
) -> None:
    assert _errors(CompletionRequest, TEXT | {field: neutral}) == []
    assert _errors(CompletionRequest, TEXT | {field: other}) == [(UNSUPPORTED, field)]


def test_an_answer_sent_back_as_history_is_accepted() -> None:
    """What `openai`'s ChatCompletionMessage.model_dump() gives for an answer."""
    answer = {
        "content": "Hello!",
        "refusal": None,
        "role": "assistant",
        "annotations": [],
        "audio": None,
        "function_call": None,
        "tool_calls": None,
    }
    body = CHAT | {"messages": [*CHAT["messages"], answer, {"role": "user", "content": "and?"}]}
    assert _errors(ChatCompletionRequest, body) == []
    legacy = answer | {"function_call": {"name": "f", "arguments": "{}"}}
    body = CHAT | {"messages": [*CHAT["messages"], legacy]}
    assert _errors(ChatCompletionRequest, body) == [(UNSUPPORTED, "messages.1.function_call")]


def test_the_json_schema_forbids_unknown_fields_and_shows_neutral_values() -> None:
    schema = ChatCompletionRequest.model_json_schema()
    assert schema["additionalProperties"] is False
    assert schema["properties"]["store"]["anyOf"] == [{"const": False}, {"type": "null"}]
    assert CompletionRequest.model_json_schema()["additionalProperties"] is False
