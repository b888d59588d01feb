"""The rendered answers and chunks have exactly the shapes of the documented response models
(`wire/schemas.py`), and floats JSON cannot carry are written as null, as pydantic writes them."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel

from edgellm.engine.types import (
    Finished,
    FinishReason,
    TextDelta,
    Timings,
    TokenLogprob,
    ToolCallDelta,
    TopLogprob,
)
from edgellm.wire import encode
from edgellm.wire.schemas import ChatCompletion, ChatCompletionChunk, Completion

IDS = encode.ResponseIds(model="m", id="chatcmpl-1", created=1700000000)
ROUTE = {"policy": None, "model": "m", "hops": [{"model": "m", "ms": 0.5}]}


def _lp(token: str, logprob: float) -> TokenLogprob:
    top = (TopLogprob(token=token, token_id=1, logprob=logprob, bytes=token.encode()),)
    return TokenLogprob(token=token, token_id=1, logprob=logprob, bytes=token.encode(), top=top)


def _done(reason: FinishReason = FinishReason.STOP) -> Finished:
    timings = Timings(prompt_n=7, prompt_ms=3.5, predicted_n=3, predicted_ms=2.0, cache_n=2)
    return Finished(reason=reason, prompt_tokens=7, completion_tokens=3, timings=timings)


def _collected(text: str = "Grüße, world", logprob: float = -0.25) -> encode.Collected:
    got = encode.Collected()
    got.add(TextDelta(text=text, token_ids=(1, 2), logprobs=(_lp("Gr", logprob), _lp("üße", -1.0))))
    return got


def _same_as_schema(raw: bytes, schema: type[BaseModel], *, exclude: set[str]) -> dict[str, Any]:
    """`raw` parses, validates against `schema` (which forbids unknown fields) and is what the
    model itself dumps, with the fields a chunk leaves out left out."""
    data = json.loads(raw)
    model = schema.model_validate(data)
    dumped = model.model_dump(mode="json", exclude=exclude)
    for choice in dumped.get("choices") or ():  # `tool_calls` only when there are calls
        for part in ("message", "delta"):
            if part in choice and choice[part].get("tool_calls") is None:
                choice[part].pop("tool_calls")
        for piece in choice.get("delta", {}).get("tool_calls") or ():
            # a call's later pieces carry only their `arguments`, as OpenAI's do
            for key in [k for k, v in piece.items() if v is None]:
                piece.pop(key)
            piece["function"] = {k: v for k, v in piece["function"].items() if v is not None}
    assert dumped == data
    return data  # type: ignore[no-any-return]


@pytest.mark.parametrize("with_logprobs", [False, True])
def test_whole_chat_answer_matches_its_model(with_logprobs: bool) -> None:
    raw = encode.chat_completion(
        IDS, _collected(), _done(), with_logprobs=with_logprobs, route=ROUTE
    )
    data = _same_as_schema(raw, ChatCompletion, exclude=set())
    assert "Grüße".encode() in raw  # UTF-8 as it is, not \\u escapes
    assert data["choices"][0]["message"] == {"role": "assistant", "content": "Grüße, world"}
    assert data["usage"]["prompt_tokens_details"] == {"cached_tokens": 2}
    assert data["route"] == ROUTE
    if with_logprobs:
        assert data["choices"][0]["logprobs"]["content"][0]["bytes"] == list(b"Gr")


@pytest.mark.parametrize("with_logprobs", [False, True])
def test_whole_completion_matches_its_model(with_logprobs: bool) -> None:
    raw = encode.completion(
        IDS, _collected(), _done(FinishReason.LENGTH), echo="Say: ", with_logprobs=with_logprobs
    )
    data = _same_as_schema(raw, Completion, exclude=set())
    choice = data["choices"][0]
    assert choice["text"] == "Say: Grüße, world"
    assert choice["finish_reason"] == "length"
    if with_logprobs:
        assert choice["logprobs"]["text_offset"] == [5, 7]


def test_an_echo_lists_the_prompts_tokens_first_the_first_one_null() -> None:
    """OpenAI's legacy shape: the prompt's tokens from offset 0, the first one's log-prob and
    alternatives null (nothing precedes it), then the answer's from the end of the prompt."""
    first = TokenLogprob(token="Say", token_id=3, logprob=math.nan, bytes=b"Say")
    prompt = [first, _lp(": ", -2.5)]
    raw = encode.completion(
        IDS, _collected(), _done(), echo="Say: ", with_logprobs=True, echo_logprobs=prompt
    )
    lp = _same_as_schema(raw, Completion, exclude=set())["choices"][0]["logprobs"]
    assert lp["tokens"] == ["Say", ": ", "Gr", "üße"]
    assert lp["token_logprobs"] == [None, -2.5, -0.25, -1.0]
    assert lp["top_logprobs"] == [None, {": ": -2.5}, {"Gr": -0.25}, {"üße": -1.0}]
    assert lp["text_offset"] == [0, 3, 5, 7]
    without = encode.completion(
        IDS, _collected(), _done(), echo="Say: ", with_logprobs=False, echo_logprobs=prompt
    )
    assert json.loads(without)["choices"][0]["logprobs"] is None


def test_chunks_carry_only_their_fields() -> None:
    first = encode.chat_chunk(IDS, role="assistant", content="")
    data = _same_as_schema(first[6:-2], ChatCompletionChunk, exclude={"usage", "timings", "route"})
    assert first.startswith(b"data: ") and first.endswith(b"\n\n")
    assert data["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "usage" not in data and "timings" not in data and "route" not in data

    last = encode.chat_chunk(
        IDS, finish="stop", timings=_done().timings.as_dict(), include_usage=True, route=ROUTE
    )
    data = _same_as_schema(last[6:-2], ChatCompletionChunk, exclude=set())
    assert data["usage"] is None and data["route"] == ROUTE
    assert data["choices"][0]["delta"] == {"role": None, "content": None}

    text = encode.completion_chunk(
        IDS, "hi", logprobs=encode.completion_logprobs([_lp("hi", -1)], 0)
    )
    _same_as_schema(text[6:-2], Completion, exclude={"usage", "timings", "route"})

    for chat in (True, False):
        usage = encode.usage_chunk(IDS, _done(), chat=chat)
        schema = ChatCompletionChunk if chat else Completion
        data = _same_as_schema(usage[6:-2], schema, exclude={"route"})
        assert data["choices"] == [] and data["usage"]["total_tokens"] == 10


def test_a_non_finite_logprob_is_rendered_as_null() -> None:
    raw = encode.chat_completion(
        IDS, _collected(logprob=-math.inf), _done(), with_logprobs=True, route=ROUTE
    )
    data = json.loads(raw)  # strict JSON: no -Infinity
    assert data["choices"][0]["logprobs"]["content"][0]["logprob"] is None
    assert data["choices"][0]["logprobs"]["content"][1]["logprob"] == -1.0


def test_numpy_numbers_in_the_route_object_are_written_as_numbers() -> None:
    route = ROUTE | {"scores": {"p_small_ok": np.float64(0.8125), "n": np.int64(3)}}
    raw = encode.chat_completion(IDS, _collected(), _done(), with_logprobs=False, route=route)
    assert json.loads(raw)["route"]["scores"] == {"p_small_ok": 0.8125, "n": 3}
    with pytest.raises(TypeError, match="not JSON serializable"):
        encode.to_json({"x": object()})


def _calls(*deltas: ToolCallDelta) -> encode.Collected:
    got = encode.Collected()
    for delta in deltas:
        got.add_call(delta)
    return got


def test_tool_calls_in_a_whole_answer_have_openais_shape() -> None:
    got = _calls(
        ToolCallDelta(index=0, id="call_a", name="f"),
        ToolCallDelta(index=0, arguments='{"x": ', done=False),
        ToolCallDelta(index=0, arguments="1}", done=True),
        ToolCallDelta(index=1, id="call_b", name="g", arguments="{}", done=True),
    )
    raw = encode.chat_completion(IDS, got, _done(FinishReason.TOOL_CALLS), with_logprobs=False)
    data = _same_as_schema(raw, ChatCompletion, exclude=set())
    choice = data["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_a",
                "type": "function",
                "function": {"name": "f", "arguments": '{"x": 1}'},
            },
            {"id": "call_b", "type": "function", "function": {"name": "g", "arguments": "{}"}},
        ],
    }


def test_a_call_cut_by_max_tokens_is_left_out_of_the_whole_answer() -> None:
    got = _calls(
        ToolCallDelta(index=0, id="call_a", name="f", arguments="{}", done=True),
        ToolCallDelta(index=1, id="call_b", name="g", arguments='{"x": ', done=False),
    )
    raw = encode.chat_completion(IDS, got, _done(FinishReason.LENGTH), with_logprobs=False)
    choice = json.loads(raw)["choices"][0]
    assert choice["finish_reason"] == "length"
    assert [c["id"] for c in choice["message"]["tool_calls"]] == ["call_a"]
    # the same pieces ended by the grammar are all calls
    raw = encode.chat_completion(IDS, got, _done(FinishReason.TOOL_CALLS), with_logprobs=False)
    assert len(json.loads(raw)["choices"][0]["message"]["tool_calls"]) == 2


def test_tool_call_chunks_have_openais_streamed_shape() -> None:
    first = encode.chat_chunk(IDS, tool_call=ToolCallDelta(index=0, id="call_a", name="f"))
    data = _same_as_schema(first[6:-2], ChatCompletionChunk, exclude={"usage", "timings", "route"})
    assert data["choices"][0]["delta"]["tool_calls"] == [
        {"index": 0, "id": "call_a", "type": "function", "function": {"name": "f", "arguments": ""}}
    ]
    more = encode.chat_chunk(IDS, tool_call=ToolCallDelta(index=0, arguments='{"x"'))
    data = _same_as_schema(more[6:-2], ChatCompletionChunk, exclude={"usage", "timings", "route"})
    assert data["choices"][0]["delta"]["tool_calls"] == [
        {"index": 0, "function": {"arguments": '{"x"'}}
    ]
