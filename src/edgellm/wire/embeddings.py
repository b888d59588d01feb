"""`/v1/embeddings` on the wire: OpenAI's request and response, encoded and decoded.

The request takes what OpenAI's does: `input` as a string, a list of strings, a token array or a
list of token arrays; `encoding_format` float or base64 (each vector's little-endian float32
bytes, base64-encoded, as OpenAI sends them and its SDK decodes them); `dimensions` only as the
model's own width (these models are not trained to be cut shorter); `user` is accepted.
EdgeLLM adds `truncate`: an input longer than the model's embedding window is cut to its first
tokens (and marked `truncated: true` in its data item) instead of refused.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
import orjson
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from edgellm.errors import InvalidRequestError

MAX_EMBEDDING_INPUTS = 2048  # OpenAI's limit of inputs per request

_INPUT_SCHEMA = WithJsonSchema(
    {
        "anyOf": [
            {"type": "string", "minLength": 1},
            {
                "type": "array",
                "items": {"type": "string", "minLength": 1},
                "minItems": 1,
                "maxItems": MAX_EMBEDDING_INPUTS,
            },
            {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1},
            {
                "type": "array",
                "items": {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 0},
                    "minItems": 1,
                },
                "minItems": 1,
                "maxItems": MAX_EMBEDDING_INPUTS,
            },
        ],
        "description": "a text, a list of texts, a token array or a list of token arrays",
    }
)

EmbeddingInput = str | list[str] | list[int] | list[list[int]]


class EmbeddingRequest(BaseModel):
    # an unknown field is refused (400 naming it), not dropped, as on the other endpoints
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    input: Annotated[EmbeddingInput, _INPUT_SCHEMA]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(
        None, ge=1, description="only the model's own width (n_embd) is accepted"
    )
    user: str | None = Field(None, description="accepted, not used: no per-user monitoring here")
    truncate: bool = Field(
        False,
        description="EdgeLLM extension: cut an input longer than the model's embedding window "
        "to its first tokens (its data item says `truncated: true`) instead of refusing it",
    )

    @field_validator("input")
    @classmethod
    def _at_most_max_inputs(cls, v: EmbeddingInput) -> EmbeddingInput:
        if isinstance(v, list) and len(v) > MAX_EMBEDDING_INPUTS and not isinstance(v[0], int):
            raise ValueError(f"at most {MAX_EMBEDDING_INPUTS} inputs per request")
        return v

    def inputs(self) -> list[str] | list[list[int]]:
        """The inputs as a list (a lone text or token array is a list of one)."""
        x = self.input
        if isinstance(x, str):
            return [x]
        if x and isinstance(x[0], int):
            return [list(x)]
        return x  # type: ignore[return-value]

    def check_dimensions(self, n_embd: int) -> None:
        if self.dimensions is not None and self.dimensions != n_embd:
            raise InvalidRequestError(
                f"this model's embeddings have {n_embd} dimensions and cannot be shortened "
                f"(dimensions: {self.dimensions}); omit dimensions or send {n_embd}",
                param="dimensions",
            )


class EmbeddingOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="floats, or base64 of little-endian float32")
    truncated: bool | None = None  # EdgeLLM: the input was cut to the model's window


class EmbeddingUsage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")

    object: Literal["list"] = "list"
    data: list[EmbeddingOut]
    model: str
    usage: EmbeddingUsage
    route: dict[str, Any] | None = None  # EdgeLLM gateway: what routing did


def embedding_response(
    model: str,
    vectors: npt.NDArray[np.float32],
    n_tokens: int,
    *,
    encoding_format: str = "float",
    truncated: Sequence[int] = (),
    route: dict[str, Any] | None = None,
) -> bytes:
    """The whole answer's JSON bytes (orjson writes float32 rows straight from numpy)."""
    cut = set(truncated)
    data: list[dict[str, Any]] = []
    for i, row in enumerate(vectors):
        vec: Any = (
            base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
            if encoding_format == "base64"
            else row
        )
        item: dict[str, Any] = {"object": "embedding", "index": i, "embedding": vec}
        if i in cut:
            item["truncated"] = True
        data.append(item)
    body: dict[str, Any] = {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
    }
    if route is not None:
        body["route"] = route
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def decode_vector(value: object) -> npt.NDArray[np.float32]:
    """A vector of an upstream's answer, float list or base64 (ValueError if neither)."""
    if isinstance(value, str):
        raw = base64.b64decode(value, validate=True)
        if len(raw) % 4:
            raise ValueError("a base64 embedding is not whole float32 values")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if isinstance(value, list) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value
    ):
        return np.asarray(value, dtype=np.float32)
    raise ValueError("an embedding is neither a list of numbers nor a base64 string")


def decode_response(
    raw: bytes, n_inputs: int
) -> tuple[npt.NDArray[np.float32], int, tuple[int, ...]]:
    """An upstream's answer (any OpenAI-compatible server's): the vectors in input order, the
    prompt tokens and the truncated inputs. ValueError for anything not such an answer."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError("the answer is not JSON") from exc
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise ValueError("the answer has no data list")
    items = body["data"]
    if len(items) != n_inputs:
        raise ValueError(f"the answer has {len(items)} embeddings for {n_inputs} inputs")
    rows: list[npt.NDArray[np.float32] | None] = [None] * n_inputs
    cut: list[int] = []
    for pos, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError("an embedding item is not an object")
        index = item.get("index", pos)
        if not isinstance(index, int) or not 0 <= index < n_inputs or rows[index] is not None:
            raise ValueError(f"bad or repeated index {index!r}")
        rows[index] = decode_vector(item.get("embedding"))
        if item.get("truncated") is True:
            cut.append(index)
    widths = {len(r) for r in rows if r is not None}
    if len(widths) != 1 or 0 in widths:
        raise ValueError("the embeddings do not all have the same, non-zero width")
    usage = body.get("usage")
    tokens = usage.get("prompt_tokens", 0) if isinstance(usage, dict) else 0
    vectors = np.stack([r for r in rows if r is not None])
    return vectors, int(tokens) if isinstance(tokens, int) else 0, tuple(sorted(cut))
