"""JSON schemas as GBNF grammars: structured output guaranteed by the sampler.

The conversion is llama-cpp-python's port of llama.cpp's `json-schema-to-grammar`. That
converter drops the keywords it does not know (a `minimum`, a `uniqueItems`) and produces a
looser grammar without a word, so an answer could parse and still fail the schema. Every
schema is therefore checked first: a keyword the grammar cannot enforce is a 400 naming it and
where it is, never a silently weaker guarantee.

The converter's string characters are any but a quote or a backslash, control characters
included, so a model could write a raw newline inside a string and the text would not be JSON
at all; llama.cpp's own converter keeps them out (U+0000-U+001F and DEL), and so does
`JSON_STRING_CHAR` here, which replaces the converter's rule.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from llama_cpp.llama_grammar import SchemaConverter

from edgellm.errors import InvalidRequestError

# What the converter turns into grammar rules.
_ENFORCED = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "enum",
        "const",
        "anyOf",
        "$ref",
        "$defs",
        "definitions",
        "pattern",
        "format",
        "minLength",
        "maxLength",
    }
)
# Annotations: they constrain nothing, so the grammar loses nothing by ignoring them.
_ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "$schema",
        "$id",
        "$comment",
        "default",
        "examples",
        "deprecated",
        "readOnly",
        "writeOnly",
    }
)
_TYPES = frozenset({"string", "number", "integer", "boolean", "null", "object", "array"})
_FORMATS = frozenset(
    {"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"}
)
_DEFS = frozenset({"$defs", "definitions"})
MAX_SCHEMA_DEPTH = 32
"""Deeper schemas are refused: the converter recurses once per level."""

JSON_STRING_CHAR = (
    r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] '
    r"[0-9a-fA-F])"
)
"""A character of a JSON string: unescaped, anything but a quote, a backslash or a control
character; escaped, as JSON spells escapes."""

JSON_OBJECT_SCHEMA: Mapping[str, Any] = {"type": "object"}
"""`response_format: {"type": "json_object"}`: any JSON object."""


def schema_grammar(schema: Any, *, param: str) -> str:
    """The GBNF grammar (root rule `root`) of the texts that are JSON documents valid against
    `schema`, or an InvalidRequestError naming `param` and the first keyword it cannot enforce."""
    if not isinstance(schema, dict):
        raise InvalidRequestError("the JSON schema must be an object", param=param)
    _check(schema, "#", param, 0)
    converter: Any = SchemaConverter(  # type: ignore[no-untyped-call]
        prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False
    )
    try:
        resolved = converter.resolve_refs(_any_spelt_out(json.loads(json.dumps(schema))), "input")
        converter.visit(resolved, "")
    except Exception as exc:  # the converter's own complaint about this schema
        raise InvalidRequestError(
            f"the JSON schema cannot be enforced: {exc}", param=param
        ) from exc
    if "char" in converter._rules:  # the one rule every JSON string is made of
        converter._rules["char"] = JSON_STRING_CHAR
    return str(converter.format_grammar())


_ANY_VALUE: Mapping[str, Any] = {
    "anyOf": [{"type": t} for t in ("object", "array", "string", "number", "boolean", "null")]
}


def _any_spelt_out(node: Any) -> Any:
    """Subschemas `{}` and `true` (any value, as pydantic writes `list[Any]`) spelt out as a
    union of every type: the converter reads `{}` as "an object" and fails on `true`."""
    if node is True or node == {}:
        return dict(_ANY_VALUE)
    if not isinstance(node, dict):
        return node
    out = dict(node)
    for key in ("properties", "$defs", "definitions"):
        if isinstance(out.get(key), dict):
            out[key] = {k: _any_spelt_out(v) for k, v in out[key].items()}
    for key in ("anyOf", "prefixItems"):
        if isinstance(out.get(key), list):
            out[key] = [_any_spelt_out(v) for v in out[key]]
    if "items" in out:
        out["items"] = _any_spelt_out(out["items"])
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _any_spelt_out(out["additionalProperties"])
    return out


def _enforced(node: dict[str, Any]) -> frozenset[str]:
    """The keywords the converter enforces for `node`: it picks one rule per schema, in this
    order, and every other keyword of that schema is left out of the grammar."""
    kind = node.get("type")
    for key in ("$ref", "anyOf"):
        if key in node:
            return frozenset({key})
    if isinstance(kind, list):
        return frozenset({"type"})
    if "const" in node or "enum" in node:
        return frozenset({"const" if "const" in node else "enum", "type"})
    if kind in (None, "object") and ("properties" in node or "additionalProperties" in node):
        return frozenset({"type", "properties", "required", "additionalProperties"})
    if kind in (None, "array") and ("items" in node or "prefixItems" in node):
        return frozenset({"type", "items" if "items" in node else "prefixItems"}) | {
            "minItems",
            "maxItems",
        }
    if kind in (None, "string") and "pattern" in node:
        return frozenset({"type", "pattern"})
    if kind in (None, "string") and "format" in node:
        return frozenset({"type", "format"})
    if kind == "string" and ("minLength" in node or "maxLength" in node):
        return frozenset({"type", "minLength", "maxLength"})
    return frozenset({"type"})


def _check(node: Any, where: str, param: str, depth: int) -> None:
    if depth > MAX_SCHEMA_DEPTH:
        raise InvalidRequestError(
            f"the JSON schema nests deeper than {MAX_SCHEMA_DEPTH} levels at {where}", param=param
        )
    if node is True:
        return
    if not isinstance(node, dict):
        raise InvalidRequestError(f"{where} is not a schema (an object)", param=param)
    for key in node:
        if key not in _ENFORCED and key not in _ANNOTATIONS:
            raise InvalidRequestError(
                f"the JSON schema keyword '{key}' at {where} is not supported: structured output "
                "cannot enforce it",
                param=param,
            )
    enforced = _enforced(node)
    for key in node:
        if key in _ENFORCED and key not in enforced and key not in _DEFS:
            raise InvalidRequestError(
                f"the JSON schema keyword '{key}' at {where} cannot be enforced together with "
                f"'{sorted(enforced)[0]}' there",
                param=param,
            )
    kind = node.get("type")
    for k in kind if isinstance(kind, list) else [kind] if kind is not None else []:
        if k not in _TYPES:
            raise InvalidRequestError(f"unknown type {k!r} at {where}/type", param=param)
    fmt = node.get("format")
    if fmt is not None and fmt not in _FORMATS:
        raise InvalidRequestError(
            f"the string format {fmt!r} at {where}/format is not supported (supported: "
            f"{', '.join(sorted(_FORMATS))})",
            param=param,
        )
    ref = node.get("$ref")
    if ref is not None and (not isinstance(ref, str) or not ref.startswith("#/")):
        raise InvalidRequestError(
            f"only local references ('#/...') are supported, not {str(ref)[:80]!r} at {where}",
            param=param,
        )
    props = node.get("properties", {})
    if not isinstance(props, dict):
        raise InvalidRequestError(f"{where}/properties must be an object", param=param)
    required = node.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise InvalidRequestError(f"{where}/required must be a list of names", param=param)
    missing = [r for r in required if r not in props]
    if missing:
        raise InvalidRequestError(
            f"{where}/required names {missing[0]!r}, which is not among its properties",
            param=param,
        )
    for name, sub in props.items():
        _check(sub, f"{where}/properties/{name}", param, depth + 1)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        _check(extra, f"{where}/additionalProperties", param, depth + 1)
    items = node.get("items")
    if items is not None:
        _check(items, f"{where}/items", param, depth + 1)
    for key in ("prefixItems", "anyOf"):
        subs = node.get(key)
        if subs is None:
            continue
        if not isinstance(subs, list) or not subs:
            raise InvalidRequestError(f"{where}/{key} must be a non-empty list", param=param)
        for i, sub in enumerate(subs):
            _check(sub, f"{where}/{key}/{i}", param, depth + 1)
    for key in _DEFS:
        defs = node.get(key)
        if isinstance(defs, dict):
            for name, sub in defs.items():
                _check(sub, f"{where}/{key}/{name}", param, depth + 1)
