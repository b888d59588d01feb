"""JSON schemas as grammars: what the converter can enforce becomes a grammar; every keyword it
would drop is refused by name, so no answer can parse and still fail its schema."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import pytest
from pydantic import BaseModel

from edgellm.engine.structured import JSON_OBJECT_SCHEMA, MAX_SCHEMA_DEPTH, schema_grammar
from edgellm.errors import InvalidRequestError


class Colour(StrEnum):
    red = "red"
    green = "green"


class Part(BaseModel):
    name: str
    count: int
    weight: float | None = None


class Order(BaseModel):
    id: str
    colour: Colour
    parts: list[Part]
    urgent: bool
    note: str | None = None


def _refused(schema: Any) -> str:
    with pytest.raises(InvalidRequestError) as err:
        schema_grammar(schema, param="response_format")
    assert err.value.param == "response_format"
    return str(err.value)


def test_nested_pydantic_schemas_become_grammars() -> None:
    for model in (Part, Order):
        grammar = schema_grammar(model.model_json_schema(), param="response_format")
        assert "root ::=" in grammar
    # the enum's values and the nested object's keys are spelled out in the rules
    grammar = schema_grammar(Order.model_json_schema(), param="response_format")
    assert '\\"red\\"' in grammar and '\\"parts\\"' in grammar
    assert "root ::=" in schema_grammar(dict(JSON_OBJECT_SCHEMA), param="response_format")


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        ({"type": "integer", "minimum": 0}, "'minimum'"),
        ({"type": "number", "multipleOf": 2}, "'multipleOf'"),
        ({"type": "array", "items": {"type": "string"}, "uniqueItems": True}, "'uniqueItems'"),
        ({"oneOf": [{"type": "string"}, {"type": "integer"}]}, "'oneOf'"),
        ({"allOf": [{"type": "object"}]}, "'allOf'"),
        ({"not": {"type": "string"}}, "'not'"),
        ({"type": "object", "patternProperties": {"^a": {}}}, "'patternProperties'"),
        # keywords the converter knows, but drops when another rule wins
        ({"type": "array", "minItems": 2}, "'minItems'"),
        ({"type": "string", "pattern": "^a+$", "maxLength": 3}, "'maxLength'"),
        ({"anyOf": [{"type": "string"}], "type": "string"}, "'type'"),
        ({"$ref": "#/$defs/a", "properties": {}, "$defs": {"a": {}}}, "'properties'"),
        ({"type": "string", "format": "email"}, "'email'"),
        ({"$ref": "https://example.com/schema.json"}, "local references"),
        ({"type": "object", "properties": {"a": {}}, "required": ["b"]}, "'b'"),
        ({"type": "strings"}, "'strings'"),
        ({"type": "object", "properties": {"a": {"type": "integer", "maximum": 3}}}, "/a"),
        ([], "an object"),
    ],
)
def test_keywords_the_grammar_cannot_enforce_are_refused_by_name(schema: Any, named: str) -> None:
    assert named in _refused(schema)


def test_the_same_schemas_without_the_keyword_are_accepted() -> None:
    for schema in (
        {"type": "integer"},
        {"type": "array", "items": {"type": "string"}, "minItems": 2},
        {"type": "string", "maxLength": 3},
        {"type": "string", "pattern": "^a+$"},
        {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        {"type": "string", "format": "date-time", "description": "annotations are fine"},
        {"type": "object", "properties": {"a": {}}, "required": ["a"]},
    ):
        assert "root ::=" in schema_grammar(schema, param="response_format")


class Loose(BaseModel):
    values: list[Any]
    extra: dict[str, Any]


def test_any_value_is_any_value_not_an_object() -> None:
    # pydantic writes list[Any] as items {}; the converter alone would allow only objects there
    grammar = schema_grammar(Loose.model_json_schema(), param="response_format")
    item_rules = [line for line in grammar.splitlines() if line.startswith("values-item ::=")]
    assert item_rules and "string" in item_rules[0] and "number" in item_rules[0]


def test_depth_is_bounded() -> None:
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(MAX_SCHEMA_DEPTH + 1):
        deep = {"type": "array", "items": deep}
    assert "deeper" in _refused(deep)
    shallow: dict[str, Any] = {"type": "string"}
    for _ in range(MAX_SCHEMA_DEPTH - 1):
        shallow = {"type": "array", "items": shallow}
    assert "root ::=" in schema_grammar(shallow, param="response_format")
