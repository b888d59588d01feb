"""The /v1/embeddings wire format: request forms, the answer's encodings, an upstream's answer
read back, and what serves embeddings by configuration."""

from __future__ import annotations

import base64

import numpy as np
import orjson
import pytest
from pydantic import ValidationError

from edgellm.config import EdgeLLMConfig, ModelConfig
from edgellm.errors import InvalidRequestError
from edgellm.wire.embeddings import (
    MAX_EMBEDDING_INPUTS,
    EmbeddingRequest,
    EmbeddingResponse,
    decode_response,
    embedding_response,
)

ROWS = np.array([[0.6, 0.8, 0.0], [1 / 3, 2 / 3, 2 / 3]], dtype=np.float32)


@pytest.mark.parametrize(
    ("given", "inputs"),
    [
        ("a text", ["a text"]),
        (["one", "two"], ["one", "two"]),
        ([1, 2, 3], [[1, 2, 3]]),
        ([[1, 2], [3]], [[1, 2], [3]]),
    ],
)
def test_every_input_form_becomes_a_list_of_inputs(given: object, inputs: object) -> None:
    assert EmbeddingRequest(model="m", input=given).inputs() == inputs  # type: ignore[arg-type]


def test_input_count_and_fields_are_bounded() -> None:
    EmbeddingRequest(model="m", input=["x"] * MAX_EMBEDDING_INPUTS)
    with pytest.raises(ValidationError, match="at most 2048 inputs"):
        EmbeddingRequest(model="m", input=["x"] * (MAX_EMBEDDING_INPUTS + 1))
    # a long text or token array is one input, not a count of inputs
    assert len(EmbeddingRequest(model="m", input="x" * 5000).inputs()) == 1
    assert len(EmbeddingRequest(model="m", input=[7] * 5000).inputs()) == 1
    with pytest.raises(ValidationError, match="encoding_format"):
        EmbeddingRequest(model="m", input="x", encoding_format="int8")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="Extra inputs"):
        EmbeddingRequest(model="m", input="x", pooling="cls")  # type: ignore[call-arg]


def test_dimensions_only_as_the_models_width() -> None:
    EmbeddingRequest(model="m", input="x").check_dimensions(576)
    EmbeddingRequest(model="m", input="x", dimensions=576).check_dimensions(576)
    with pytest.raises(InvalidRequestError, match="576 dimensions") as err:
        EmbeddingRequest(model="m", input="x", dimensions=64).check_dimensions(576)
    assert err.value.param == "dimensions"


def test_float_and_base64_answers_hold_the_same_float32() -> None:
    floats = orjson.loads(embedding_response("m", ROWS, 7))
    b64 = orjson.loads(embedding_response("m", ROWS, 7, encoding_format="base64"))
    EmbeddingResponse.model_validate(floats)
    EmbeddingResponse.model_validate(b64)
    assert floats["usage"] == {"prompt_tokens": 7, "total_tokens": 7}
    for f, b, row in zip(floats["data"], b64["data"], ROWS, strict=True):
        as_float = np.array(f["embedding"], dtype=np.float32)
        as_b64 = np.frombuffer(base64.b64decode(b["embedding"]), dtype="<f4")
        assert np.array_equal(as_float, row) and np.array_equal(as_b64, row)
    assert [d["index"] for d in floats["data"]] == [0, 1]
    assert "truncated" not in floats["data"][0]


def test_truncated_inputs_are_marked_and_only_they() -> None:
    body = orjson.loads(embedding_response("m", ROWS, 9, truncated=[1]))
    assert [d.get("truncated") for d in body["data"]] == [None, True]


def test_an_upstream_answer_reads_back_in_input_order() -> None:
    body = orjson.loads(embedding_response("m", ROWS, 7, encoding_format="base64"))
    body["data"].reverse()  # servers may list them in any order; `index` says which is which
    vectors, tokens, cut = decode_response(orjson.dumps(body), 2)
    assert np.array_equal(vectors, ROWS) and tokens == 7 and cut == ()
    floats = embedding_response("m", ROWS, 7, truncated=[0])
    vectors, _, cut = decode_response(floats, 2)
    assert np.array_equal(vectors, ROWS) and cut == (0,)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"not json", "not JSON"),
        (b'{"object": "list"}', "no data list"),
        (b'{"data": [{"index": 0, "embedding": [1.0, 0.0]}]}', "1 embeddings for 2 inputs"),
        (
            b'{"data": [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [1.0]}]}',
            "repeated index",
        ),
        (
            b'{"data": [{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": [1.0, 2.0]}]}',
            "same, non-zero width",
        ),
        (
            b'{"data": [{"index": 0, "embedding": "@@"}, {"index": 1, "embedding": [1.0]}]}',
            "base64|Incorrect padding|Non-base64|Only base64",
        ),
        (
            b'{"data": [{"index": 0, "embedding": ["a"]}, {"index": 1, "embedding": [1.0]}]}',
            "neither a list of numbers",
        ),
    ],
)
def test_anything_else_from_an_upstream_is_refused(raw: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        decode_response(raw, 2)


def test_what_serves_embeddings_by_default() -> None:
    models = {m.name: m.serves for m in EdgeLLMConfig().models}
    assert models == {
        "smollm2-135m-instruct": ["generation", "embeddings"],
        "gemma3-270m": ["generation"],
    }
    # the bundled default follows the source, whatever the name; an explicit list wins
    assert ModelConfig(name="x", source="smollm2-135m-instruct").serves == [
        "generation",
        "embeddings",
    ]
    assert ModelConfig(name="x", source="smollm2-135m-instruct", serves=["generation"]).serves == [
        "generation"
    ]
    assert ModelConfig(name="x", source="/m/other.gguf").serves == ["generation"]
    with pytest.raises(ValidationError, match="at most once"):
        ModelConfig(name="x", source="y", serves=["embeddings", "embeddings"])
    with pytest.raises(ValidationError):
        ModelConfig(name="x", source="y", serves=[])


def test_a_policy_cannot_route_to_a_model_that_only_embeds() -> None:
    embedder = {"name": "e", "source": "/m/e.gguf", "serves": ["embeddings"]}
    chat = {"name": "c", "source": "/m/c.gguf"}
    EdgeLLMConfig(
        models=[embedder, chat], policies=[{"name": "p", "kind": "rules", "models": ["c"]}]
    )  # type: ignore[list-item]
    with pytest.raises(ValidationError, match="serve embeddings only"):
        EdgeLLMConfig(
            models=[embedder, chat],  # type: ignore[list-item]
            policies=[{"name": "p", "kind": "rules", "models": ["e", "c"]}],  # type: ignore[list-item]
        )
