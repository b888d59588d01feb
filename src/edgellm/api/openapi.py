"""What `/openapi.json` says each endpoint answers: every error status it can return (with the
OpenAI error body), event streams for streamed generation, Prometheus text for `/metrics`.

Route decorators take their `responses=` from here; `install` adds the schemas these refer to
(FastAPI registers a model only when a response names it as its `model`).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from edgellm.wire.schemas import ErrorResponse

Responses = dict[int | str, dict[str, Any]]

_REF = "#/components/schemas/{model}"

ERRORS: dict[int, str] = {
    400: "Malformed JSON, a field no endpoint knows, an OpenAI field at a value EdgeLLM cannot "
    "serve (`store: true`), or a value the model cannot take (a token id outside its "
    "vocabulary, a prompt and `max_tokens` beyond its context window)",
    401: "No valid API key (only on servers with keys configured)",
    404: "No served model by this name",
    413: "The request body is over the server's size limit",
    422: "A field is missing, of the wrong type or out of range",
    429: "The model's queue is full, or the key's rate limit is reached (`Retry-After` says when "
    "to try again)",
    502: "The model's replica failed (gateway)",
    503: "The model is loading or unavailable, or none of its replicas is healthy",
    504: "The model's replica did not answer in time (gateway)",
}

# Every request may carry a body over the limit; every one but /health and /metrics needs a key
# when keys are configured (and is counted against its rate limit).
OPEN = (413,)
KEYED = (401, 413, 429)
# Requests naming a model: it may be unknown, loading, remote; the body is validated.
MODEL = (400, 401, 404, 413, 422, 429, 502, 503, 504)


def errors(statuses: tuple[int, ...]) -> Responses:
    """The OpenAI error body, as JSON whatever the endpoint's own media type."""
    body = {"application/json": {"schema": _ref(ErrorResponse)}}
    return {s: {"description": ERRORS[s], "content": body} for s in statuses}


def answer(model: type[BaseModel], statuses: tuple[int, ...] = MODEL) -> Responses:
    """A JSON answer of `model`, and the errors `statuses`."""
    ok: Responses = {200: {"model": model}}
    return ok | errors(statuses)


def health(model: type[BaseModel]) -> Responses:
    """/health: its own body for 503 (models loading or failed), not the error body."""
    states: Responses = {
        200: {"model": model, "description": "Every model is loaded"},
        503: {"model": model, "description": "Models are loading, or failed to"},
    }
    return states | errors(OPEN)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def event_stream(chunk: type[BaseModel]) -> dict[str, Any]:
    """One server-sent event of a streamed answer (the schema of each event, as Open API 3.1
    tools read `text/event-stream`): a JSON chunk, an error that ended the stream after it
    started, or the final `[DONE]`."""
    return {
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {
                "anyOf": [
                    {"const": "[DONE]"},
                    {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": {"anyOf": [_ref(chunk), _ref(ErrorResponse)]},
                    },
                ]
            }
        },
    }


def generation(answer: type[BaseModel], chunk: type[BaseModel]) -> Responses:
    """Chat or text completions: a whole JSON answer, or an event stream with `stream: true`."""
    ok: Responses = {
        200: {
            "model": answer,
            "description": "The answer: JSON, or server-sent events with `stream: true`",
            "content": {"text/event-stream": {"schema": event_stream(chunk)}},
        }
    }
    return ok | errors(MODEL)


_PROMETHEUS_TEXT: Responses = {
    200: {
        "description": "Prometheus text exposition format 0.0.4",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
}
PROMETHEUS = _PROMETHEUS_TEXT | errors(OPEN)


def install(app: FastAPI, streamed: tuple[type[BaseModel], ...]) -> None:
    """Have `app.openapi()` also carry the schemas of `streamed` (event stream chunks) and of
    the error body."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = app.openapi_schema
        if schema is None:
            schema = build()  # and kept as app.openapi_schema
            kinds: tuple[type[BaseModel], ...] = (*streamed, ErrorResponse)
            models: list[tuple[type[BaseModel], Literal["serialization"]]] = [
                (model, "serialization") for model in kinds
            ]
            _, defs = models_json_schema(models, ref_template=_REF)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in defs.get("$defs", {}).items():
                components.setdefault(name, definition)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
