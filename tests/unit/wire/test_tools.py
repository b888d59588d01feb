"""Tool calls on a text model (`wire/tools.py`): what a request may ask (the 400s and their
pairs that pass), how tools and the history are written into the prompt, and how the generated
text is read back into OpenAI's tool calls, whole or cut anywhere into chunks."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgellm.engine.chat_template import ChatTemplate
from edgellm.engine.types import Finished, FinishReason, TextDelta, Timings, ToolCallDelta
from edgellm.errors import InvalidRequestError
from edgellm.wire import decode, encode, tools
from edgellm.wire.schemas import ChatCompletionRequest

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time"}}
USER = [{"role": "user", "content": "Weather in Oslo?"}]


def _body(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "m", "messages": USER} | fields)


def _refused(body: ChatCompletionRequest) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as info:
        tools.plan(body)
    return info.value


# -- what a request may ask -----------------------------------------------------------------


def test_a_named_choice_must_name_one_of_the_tools() -> None:
    err = _refused(
        _body(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}})
    )
    assert err.param == "tool_choice" and "'nope'" in err.message and "get_weather" in err.message
    ok = tools.plan(
        _body(
            tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}}
        )
    )
    assert ok is not None and ok.choice == "get_weather"


def test_a_parameters_keyword_the_grammar_cannot_enforce_is_named() -> None:
    loose = json.loads(json.dumps(WEATHER))
    loose["function"]["parameters"]["properties"]["days"] = {"type": "integer", "minimum": 1}
    err = _refused(_body(tools=[TIME, loose], tool_choice="required"))
    assert err.param == "tools[1].function.parameters" and "'minimum'" in err.message
    loose["function"]["parameters"]["properties"]["days"] = {"type": "integer"}
    assert tools.plan(_body(tools=[TIME, loose], tool_choice="required")) is not None


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"grammar": 'root ::= "x"'}, "grammar"),
        ({"json_schema": {"type": "object"}}, "json_schema"),
    ],
)
def test_tools_with_another_constraint_on_the_answer_are_refused(
    fields: dict[str, Any], param: str
) -> None:
    assert _refused(_body(tools=[WEATHER], **fields)).param == param
    # with tool_choice none no tool is offered, and the other constraint applies alone
    assert tools.plan(_body(tools=[WEATHER], tool_choice="none", **fields)) is None


def test_other_refusals_and_what_passes() -> None:
    assert _refused(_body(tools=[WEATHER, WEATHER])).param == "tools[1].function.name"
    assert _refused(_body(tool_choice="required")).param == "tool_choice"
    assert tools.plan(_body(tool_choice="none")) is None
    bad = {"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}
    assert _refused(_body(tools=[bad])).param == "tools[0].function.parameters"
    plan = tools.plan(_body(tools=[WEATHER, TIME], parallel_tool_calls=False))
    assert plan is not None and plan.choice == "auto" and not plan.parallel
    # no parameters: an object without any
    assert plan.tools[1]["function"]["parameters"] == {"type": "object", "properties": {}}


def test_unknown_tool_fields_are_refused_by_the_schema() -> None:
    with pytest.raises(ValueError, match="pattern"):
        _body(tools=[{"type": "function", "function": {"name": "has space"}}])
    with pytest.raises(ValueError, match="tool_choice"):
        _body(tools=[WEATHER], tool_choice="sometimes")


# -- the prompt -----------------------------------------------------------------------------

HISTORY: list[dict[str, Any]] = [
    {"role": "system", "content": "Be brief."},
    *USER,
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
            },
            {
                "id": "call_2",
                "type": "function",
                "function": {"name": "get_time", "arguments": "{}"},
            },
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "3 C, rain"},
    {"role": "tool", "tool_call_id": "call_2", "content": "14:02"},
    {"role": "assistant", "content": "Rainy, 3 C."},
    {"role": "user", "content": "And tomorrow?"},
]


def test_the_generic_format_writes_the_history_as_the_model_must_answer() -> None:
    plan = tools.plan(_body(tools=[WEATHER, TIME]))
    out = tools.prompt_messages(HISTORY, plan, native=False)
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user", "assistant", "user"]
    system = out[0]["content"]
    assert system.startswith("Be brief.\n\n") and '"name":"get_weather"' in system
    assert '{"response": "<your answer>"}' in system  # auto: a call or an answer
    calls = json.loads(out[2]["content"])["tool_calls"]
    assert calls[0] == {"name": "get_weather", "arguments": {"city": "Oslo"}, "id": "call_1"}
    results = json.loads(out[3]["content"])["tool_results"]  # both results in one message
    assert [(r["name"], r["content"]) for r in results] == [
        ("get_weather", "3 C, rain"),
        ("get_time", "14:02"),
    ]
    assert json.loads(out[4]["content"]) == {"response": "Rainy, 3 C."}


def test_without_tools_offered_only_the_tool_turns_are_rewritten() -> None:
    out = tools.prompt_messages(HISTORY, None, native=False)
    assert out[0] == HISTORY[0]  # no description
    assert out[4] == HISTORY[5]  # a plain answer stays plain
    assert "tool_calls" in json.loads(out[2]["content"])


def test_a_native_template_gets_the_history_unchanged() -> None:
    plan = tools.plan(_body(tools=[WEATHER]), template=HERMES_TEMPLATE)
    assert plan is not None and plan.format == "native"
    assert tools.prompt_messages(HISTORY, plan, native=True) is HISTORY


def test_a_tool_message_needs_its_call_id() -> None:
    with pytest.raises(InvalidRequestError, match="tool_call_id"):
        tools.prompt_messages([*USER, {"role": "tool", "content": "x"}], None, native=False)


def test_the_named_choice_and_one_call_are_said_in_the_description() -> None:
    plan = tools.plan(
        _body(
            tools=[WEATHER, TIME],
            tool_choice={"type": "function", "function": {"name": "get_time"}},
            parallel_tool_calls=False,
        )
    )
    assert plan is not None
    text = tools.describe(plan)
    assert '"name": "get_time"' in text and "get_weather" not in text
    assert "one tool at a time" in text


# A Hermes-style template (as Qwen 2.5's): tools in the system turn, calls as <tool_call> tags.
HERMES_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n# Tools\n<tools>"
    "{% for tool in tools %}\n{{ tool | tojson }}{% endfor %}</tools>\n"
    'Return <tool_call>{"name": ..., "arguments": ...}</tool_call><|im_end|>\n{% endif %}'
    "{% for message in messages %}<|im_start|>{{ message.role }}\n"
    "{% if message.tool_calls %}{% for call in message.tool_calls %}"
    '<tool_call>\n{"name": "{{ call.function.name }}", "arguments": '
    "{{ call.function.arguments | tojson }}}\n</tool_call>{% endfor %}"
    "{% else %}{{ message.content }}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_a_template_that_renders_tools_gets_them_as_transformers_gives_them() -> None:
    template = ChatTemplate(HERMES_TEMPLATE, bos_token="", eos_token="")
    assert template.renders_tools and tools.native_format(HERMES_TEMPLATE)
    text = template.render(HISTORY[1:3], tools=[WEATHER])
    assert '{"type": "function", "function": {"name": "get_weather"' in text
    # arguments as an object (transformers' convention), written back as JSON, not escaped
    assert '"arguments": {"city": "Oslo"}' in text
    plain = ChatTemplate(
        "{% for m in messages %}{{ m.content }}{% endfor %}", bos_token="", eos_token=""
    )
    assert not plain.renders_tools and not tools.native_format(None)


# -- the grammar ----------------------------------------------------------------------------


def test_the_grammar_offers_only_what_the_choice_allows() -> None:
    auto = tools.grammar(tools.plan(_body(tools=[WEATHER, TIME])))  # type: ignore[arg-type]
    assert auto is not None and '"\\"get_time\\""' in auto and "response" in auto
    named = tools.grammar(
        tools.plan(  # type: ignore[arg-type]
            _body(
                tools=[WEATHER, TIME],
                tool_choice={"type": "function", "function": {"name": "get_time"}},
            )
        )
    )
    assert named is not None and "get_weather" not in named and "response" not in named
    native = tools.plan(_body(tools=[WEATHER]), template=HERMES_TEMPLATE)
    assert native is not None and tools.grammar(native) is None  # auto: free text
    required = tools.plan(_body(tools=[WEATHER], tool_choice="required"), template=HERMES_TEMPLATE)
    rules = tools.grammar(required)  # type: ignore[arg-type]
    assert rules is not None and rules.rstrip().splitlines()[-1].startswith(
        'root ::= "<tool_call>\\n" tool-call "\\n</tool_call>"'
    )


def test_references_inside_a_tool_schema_follow_it() -> None:
    nested = {
        "type": "function",
        "function": {
            "name": "ship",
            "parameters": {
                "type": "object",
                "properties": {"to": {"$ref": "#/$defs/Place"}},
                "required": ["to"],
                "$defs": {"Place": {"type": "object", "properties": {"city": {"type": "string"}}}},
            },
        },
    }
    rules = tools.grammar(tools.plan(_body(tools=[nested], tool_choice="required")))  # type: ignore[arg-type]
    assert rules is not None and "city" in rules


# -- reading the answer ---------------------------------------------------------------------


def _read(parser: tools.Parser, text: str, cuts: list[int]) -> tuple[str, list[ToolCallDelta]]:
    """`text` fed to `parser` in pieces cut at `cuts`."""
    content, deltas = [], []
    bounds = [0, *sorted(set(cuts)), len(text)]
    for a, b in itertools.pairwise(bounds):
        c, d = parser.feed(text[a:b])
        content.append(c)
        deltas += d
    c, d = parser.finish()
    return "".join(content) + c, deltas + d


def _assembled(deltas: list[ToolCallDelta], reason: FinishReason) -> list[dict[str, Any]]:
    got = encode.Collected()
    for d in deltas:
        got.add_call(d)
    done = Finished(reason, 1, 1, Timings())
    return [c["function"] for c in got.tool_calls(done)]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(
    calls=st.lists(
        st.tuples(
            st.sampled_from(["a", "get_weather"]),
            st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=4),
        ),
        min_size=1,
        max_size=3,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
    spaced=st.booleans(),
)
def test_calls_read_in_any_pieces_are_the_calls_generated(
    calls: list[tuple[str, dict[str, Any]]], cuts: list[int], spaced: bool
) -> None:
    sep = (", ", ": ") if spaced else (",", ":")
    text = json.dumps(
        {"tool_calls": [{"name": n, "arguments": a} for n, a in calls]}, separators=sep
    )
    content, deltas = _read(tools.GenericParser(), text, cuts)
    assert content == ""
    out = _assembled(deltas, FinishReason.LENGTH)  # only complete calls: all of them here
    assert [(f["name"], json.loads(f["arguments"])) for f in out] == calls
    firsts = [d for d in deltas if d.name is not None]
    assert [d.index for d in firsts] == list(range(len(calls)))
    assert all(d.id and d.id.startswith("call_") for d in firsts)


@settings(max_examples=150, deadline=None)
@given(
    answer=st.text(max_size=40),
    cuts=st.lists(st.integers(0, 300), max_size=10),
    ascii=st.booleans(),
)
def test_a_response_read_in_any_pieces_is_its_text(
    answer: str, cuts: list[int], ascii: bool
) -> None:
    text = json.dumps({"response": answer}, ensure_ascii=ascii)
    content, deltas = _read(tools.GenericParser(), text, cuts)
    assert deltas == [] and content == answer.encode("utf-8", "replace").decode("utf-8")


def test_escapes_and_surrogates_in_a_response() -> None:
    parser = tools.GenericParser()
    text = '{"response": "a\\"b\\\\c\\n\\u00e9 \\ud83d\\ude00 \\ud800x \\udc00"}'
    assert _read(parser, text, list(range(len(text))))[0] == 'a"b\\c\né 😀 \ufffdx \ufffd'


def test_a_call_cut_before_its_arguments_close_is_not_a_call() -> None:
    text = '{"tool_calls": [{"name": "a", "arguments": {}}, {"name": "b", "arguments": {"x": [1, '
    _, deltas = _read(tools.GenericParser(), text, [20, 50])
    assert [f["name"] for f in _assembled(deltas, FinishReason.LENGTH)] == ["a"]
    assert [f["name"] for f in _assembled(deltas, FinishReason.TOOL_CALLS)] == ["a", "b"]


def test_hermes_calls_between_text() -> None:
    text = (
        'Let me look.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n'
        '</tool_call>\n<tool_call>{"name": "nope", "arguments": {}}</tool_call>'
        "<tool_call>not json</tool_call> Done."
    )
    for cuts in ([], list(range(len(text))), [5, 13, 14, 60]):
        content, deltas = _read(tools.HermesParser(["get_weather"]), text, cuts)
        assert [(d.name, json.loads(d.arguments)) for d in deltas] == [
            ("get_weather", {"city": "Oslo"})
        ]
        # calls of no offered tool, or not JSON, stay in the text as generated
        assert content == (
            'Let me look.\n<tool_call>{"name": "nope", "arguments": {}}</tool_call>'
            "<tool_call>not json</tool_call> Done."
        )


def test_an_unfinished_hermes_call_is_dropped_and_a_held_back_tag_start_is_text() -> None:
    assert _read(tools.HermesParser(["f"]), 'x<tool_call>{"name": "f", "argu', [3])[0] == "x"
    assert _read(tools.HermesParser(["f"]), "a <tool_c", [])[0] == "a <tool_c"


async def _events(events: list[Any]) -> Any:
    for e in events:
        yield e


class _Stream:
    def __init__(self, events: list[Any]) -> None:
        self.events = events
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def __aiter__(self) -> Any:
        return _events(self.events)


async def _all(stream: tools.ToolCallStream) -> list[Any]:
    return [e async for e in stream]


def test_the_stream_wrapper_keeps_tokens_and_says_tool_calls() -> None:
    plan = tools.plan(_body(tools=[TIME], tool_choice="required"))
    assert plan is not None
    text = '{"tool_calls": [{"name": "get_time", "arguments": {}}]}'
    done = Finished(FinishReason.STOP, 5, 9, Timings())
    events = [TextDelta(text[:30], (1, 2)), TextDelta(text[30:], (3,)), done]
    out = asyncio.run(_all(tools.ToolCallStream(_Stream(events), plan)))
    assert [e.token_ids for e in out if isinstance(e, TextDelta)] == [(1, 2), (3,)]
    assert all(e.text == "" for e in out if isinstance(e, TextDelta))
    assert [e.name for e in out if isinstance(e, ToolCallDelta) and e.name] == ["get_time"]
    assert out[-1].reason is FinishReason.TOOL_CALLS and out[-1].completion_tokens == 9
    # an answer instead of a call ends as it did
    auto = tools.plan(_body(tools=[TIME]))
    assert auto is not None
    events = [TextDelta('{"response": "It is 2."}', (1,)), done]
    out = asyncio.run(_all(tools.ToolCallStream(_Stream(events), auto)))
    assert "".join(e.text for e in out if isinstance(e, TextDelta)) == "It is 2."
    assert out[-1].reason is FinishReason.STOP


# -- through an upstream ---------------------------------------------------------------------

IDS = encode.ResponseIds(model="m", id="chatcmpl-1", created=1)


def test_an_upstreams_tool_calls_decode_into_the_same_events() -> None:
    pieces = [
        ToolCallDelta(index=0, id="call_a", name="f"),
        ToolCallDelta(index=0, arguments='{"x": 1}'),
        ToolCallDelta(index=1, id="call_b", name="g", arguments="{}"),
    ]
    reader = decode.StreamReader()
    got = []
    for p in pieces:
        got += reader.feed(encode.chat_chunk(IDS, tool_call=p))
    got += reader.feed(encode.chat_chunk(IDS, finish="tool_calls"))
    assert got == pieces and reader.finished().reason is FinishReason.TOOL_CALLS  # type: ignore[union-attr]

    whole = encode.Collected()
    for p in pieces:
        whole.add_call(p)
    raw = encode.chat_completion(
        IDS, whole, Finished(FinishReason.TOOL_CALLS, 1, 2, Timings()), with_logprobs=False
    )
    answer = decode.answer(raw)
    assert answer.finished is not None and answer.finished.reason is FinishReason.TOOL_CALLS
    assert [(c.id, c.name, c.arguments, c.done) for c in answer.tool_calls] == [
        ("call_a", "f", '{"x": 1}', True),
        ("call_b", "g", "{}", True),
    ]
