"""Tool calls over HTTP with the official `openai` client (and LangChain) against real nodes,
both bundled models, at --parallel 1 and 2: `required` and named calls whose arguments validate
against the tool's schema, `none` without calls, a multi-turn with a tool result, streamed calls
reassembling to the whole answer, the 400s, and the fields passing through the gateway's local
and HTTP backends (`edgellm serve --config`)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from edgellm.config import EngineConfig, ModelConfig
from edgellm.wire import tools
from edgellm.wire.schemas import ChatCompletionRequest
from tests.integration.servers import RunningServer, free_port, start_server
from tests.integration.test_cli import spawn, stop

pytestmark = pytest.mark.integration

SMOL, GEMMA = "smollm2-135m-instruct", "gemma3-270m"
SMOL_P2 = "smol-parallel-2"  # SmolLM2 again, at --parallel 2
MODELS = [SMOL, GEMMA, SMOL_P2]

# Strings and lists are bounded: a small model left to ramble inside a string would end by
# max_tokens (a `length` finish) rather than by the grammar.
WEATHER = {
    "name": "get_weather",
    "description": "The current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 24},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
}
ORDER = {
    "name": "place_order",
    "description": "Order parts for a site",
    "parameters": {
        "type": "object",
        "properties": {
            "site": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 20},
                    "dock": {"type": "integer"},
                },
                "required": ["city", "dock"],
            },
            "items": {
                "type": "array",
                "maxItems": 3,
                "items": {
                    "type": "object",
                    "properties": {
                        "part": {"type": "string", "enum": ["bolt", "nut", "gear"]},
                        "count": {"type": "integer"},
                    },
                    "required": ["part", "count"],
                },
            },
            "express": {"type": "boolean"},
        },
        "required": ["site", "items", "express"],
    },
}
READING = {
    "name": "record_reading",
    "description": "Record a sensor reading",
    "parameters": {
        "type": "object",
        "properties": {
            "sensor": {"type": "string", "pattern": "^[a-z]{1,8}-[0-9]{1,3}$"},
            "value": {"type": "number"},
            "samples": {"type": "array", "items": {"type": "number"}, "maxItems": 4},
            "ok": {"type": "boolean"},
        },
        "required": ["sensor", "value", "samples"],
    },
}
SCHEMAS = {f["name"]: f["parameters"] for f in (WEATHER, ORDER, READING)}
PROMPTS = {
    "get_weather": "What is the weather in Oslo right now?",
    "place_order": "Order 4 bolts and 2 gears for the Lyon site, dock 3, express.",
    "record_reading": "Sensor temp-12 read 21.5 degrees (samples 21.4, 21.6).",
}


def tool(fn: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": fn}


TOOLS = [tool(WEATHER), tool(ORDER), tool(READING)]
# One call per answer: left free, these small models repeat a call until max_tokens
# (test_parallel_calls_each_validate covers the calls of such an answer).
ONE = {"parallel_tool_calls": False}


@pytest.fixture(scope="module")
def node() -> Iterator[RunningServer]:
    def config(name: str, source: str, parallel: int) -> ModelConfig:
        engine = EngineConfig(n_ctx=2048, n_threads=2, parallel=parallel, seed=7)
        return ModelConfig(name=name, source=source, engine=engine)

    server = start_server(
        [config(SMOL, SMOL, 1), config(GEMMA, GEMMA, 2), config(SMOL_P2, SMOL, 2)]
    )
    yield server
    server.stop()


@pytest.fixture
def client(node: RunningServer) -> openai.OpenAI:
    return node.client()


def ask(client: openai.OpenAI, model: str, content: str, **fields: Any) -> Any:
    fields = {"temperature": 0, "max_tokens": 200} | fields
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}], **fields
    )


def assert_valid_calls(choice: Any, *, names: set[str]) -> list[tuple[str, dict[str, Any]]]:
    """Each call in OpenAI's shape, of an offered tool, arguments valid against its schema."""
    calls = choice.message.tool_calls or []
    out = []
    for call in calls:
        assert call.type == "function" and call.id.startswith("call_")
        assert call.function.name in names
        assert isinstance(call.function.arguments, str)  # a JSON text, as OpenAI sends it
        args = json.loads(call.function.arguments)
        jsonschema.validate(args, SCHEMAS[call.function.name])
        out.append((call.function.name, args))
    return out


# -- required, named, none, auto -------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("name", list(SCHEMAS))
def test_required_gives_one_call_whose_arguments_validate(
    client: openai.OpenAI, model: str, name: str
) -> None:
    r = ask(client, model, PROMPTS[name], tools=TOOLS, tool_choice="required",
            parallel_tool_calls=False)  # fmt: skip
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = assert_valid_calls(choice, names=set(SCHEMAS))
    assert len(calls) == 1


@pytest.mark.parametrize("model", [SMOL, GEMMA])
def test_a_named_function_is_the_one_called(client: openai.OpenAI, model: str) -> None:
    for name in SCHEMAS:
        named = {"type": "function", "function": {"name": name}}
        # the prompt is about the weather: the choice, not the prompt, decides the tool
        r = ask(client, model, PROMPTS["get_weather"], tools=TOOLS, tool_choice=named, **ONE)
        choice = r.choices[0]
        assert choice.finish_reason == "tool_calls"
        calls = assert_valid_calls(choice, names={name})
        assert calls and all(n == name for n, _ in calls)


@pytest.mark.parametrize("model", [SMOL, GEMMA])
def test_none_gives_text_and_no_calls(client: openai.OpenAI, model: str) -> None:
    r = ask(client, model, PROMPTS["get_weather"], tools=TOOLS, tool_choice="none", max_tokens=24)
    choice = r.choices[0]
    assert choice.message.tool_calls is None
    assert choice.finish_reason in ("stop", "length") and choice.message.content
    # the pair: the same request with the tools offered calls one
    r = ask(client, model, PROMPTS["get_weather"], tools=TOOLS, tool_choice="required",
            parallel_tool_calls=False)  # fmt: skip
    assert r.choices[0].message.tool_calls


@pytest.mark.parametrize("model", [SMOL, GEMMA])
def test_auto_gives_valid_calls_or_an_answer(client: openai.OpenAI, model: str) -> None:
    seen = set()
    for name, prompt in PROMPTS.items():
        r = ask(client, model, prompt, tools=TOOLS, max_tokens=120, **ONE)
        choice = r.choices[0]
        if choice.finish_reason == "tool_calls":
            assert assert_valid_calls(choice, names=set(SCHEMAS))
            assert choice.message.content is None
            seen.add("call")
        else:
            assert choice.message.tool_calls is None
            assert isinstance(choice.message.content, str)
            seen.add(f"answer:{name}")
    assert seen


def test_parallel_calls_each_validate(client: openai.OpenAI) -> None:
    r = ask(client, SMOL, "Weather in Oslo and in Lyon?", tools=[tool(WEATHER)],
            tool_choice="required", max_tokens=90)  # fmt: skip
    choice = r.choices[0]
    calls = assert_valid_calls(choice, names={"get_weather"})
    assert calls
    # cut by max_tokens, the whole answer holds only the complete calls
    assert choice.finish_reason in ("tool_calls", "length")


def test_two_requests_at_once_on_a_parallel_node(client: openai.OpenAI) -> None:
    results: dict[str, Any] = {}

    def run(name: str) -> None:
        results[name] = ask(client, SMOL_P2, PROMPTS[name], tools=TOOLS, tool_choice="required",
                            parallel_tool_calls=False, temperature=0.7, seed=3)  # fmt: skip

    threads = [threading.Thread(target=run, args=(n,)) for n in ("get_weather", "place_order")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results.values():
        assert r.choices[0].finish_reason == "tool_calls"
        assert len(assert_valid_calls(r.choices[0], names=set(SCHEMAS))) == 1


# -- multi-turn -------------------------------------------------------------------------------


def _turns(result: str | None) -> list[dict[str, Any]]:
    turns: list[dict[str, Any]] = [
        {"role": "user", "content": "What is the weather in Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_abc",
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "arguments": '{"city": "Oslo", "unit": "celsius"}',
                    },
                }
            ],
        },
    ]
    if result is not None:
        turns.append({"role": "tool", "tool_call_id": "call_abc", "content": result})
    return turns


@pytest.mark.parametrize("model", [SMOL, GEMMA])
def test_a_tool_result_in_the_history_reaches_the_model(client: openai.OpenAI, model: str) -> None:
    with_result = client.chat.completions.create(
        model=model, messages=_turns("Rain, 3 degrees celsius, wind from the north."),
        tools=TOOLS, temperature=0, max_tokens=60, **ONE,
    )  # fmt: skip
    without = client.chat.completions.create(
        model=model, messages=_turns(None), tools=TOOLS, temperature=0, max_tokens=1
    )
    assert with_result.usage.prompt_tokens > without.usage.prompt_tokens + 10
    choice = with_result.choices[0]
    if choice.finish_reason == "tool_calls":
        assert_valid_calls(choice, names=set(SCHEMAS))
    else:
        assert isinstance(choice.message.content, str)
    # a further call after the result is grammar-held as the first was
    again = client.chat.completions.create(
        model=model, messages=[*_turns("Rain, 3 C."), {"role": "user", "content": "And Lyon?"}],
        tools=TOOLS, tool_choice="required", parallel_tool_calls=False, temperature=0,
        max_tokens=200,
    )  # fmt: skip
    assert again.choices[0].finish_reason == "tool_calls"
    assert len(assert_valid_calls(again.choices[0], names=set(SCHEMAS))) == 1


# -- streaming --------------------------------------------------------------------------------


def reassemble(stream: Any) -> tuple[list[tuple[str, str]], str, str | None, list[str]]:
    """Streamed calls by index (name, arguments), the content, the finish reason, and the
    calls' ids as their first chunk gave them."""
    calls: dict[int, list[str]] = {}
    ids: list[str] = []
    content, finish = "", None
    for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        delta = choice.delta
        content += delta.content or ""
        for piece in delta.tool_calls or ():
            if piece.index not in calls:
                # the first chunk of a call has its id, type and name
                assert piece.id and piece.type == "function" and piece.function.name
                ids.append(piece.id)
                calls[piece.index] = [piece.function.name, ""]
            else:
                assert piece.id is None and piece.function.name is None
            calls[piece.index][1] += piece.function.arguments or ""
        finish = choice.finish_reason or finish
    return [(n, a) for n, a in (calls[i] for i in sorted(calls))], content, finish, ids


@pytest.mark.parametrize("model", [SMOL, GEMMA])
@pytest.mark.parametrize("choice", ["required", "named", "auto"])
def test_streamed_calls_reassemble_to_the_whole_answer(
    client: openai.OpenAI, model: str, choice: str
) -> None:
    tool_choice: Any = (
        {"type": "function", "function": {"name": "place_order"}} if choice == "named" else choice
    )
    fields = {"tools": TOOLS, "tool_choice": tool_choice, "parallel_tool_calls": False}
    # the first request prefills the whole prompt, the next ones find it cached: llama.cpp's
    # kernels round differently for the two batch shapes, so only those two are compared
    ask(client, model, PROMPTS["place_order"], **fields)
    whole = ask(client, model, PROMPTS["place_order"], **fields)
    streamed = ask(client, model, PROMPTS["place_order"], stream=True, **fields)
    calls, content, finish, ids = reassemble(streamed)
    w = whole.choices[0]
    assert finish == w.finish_reason
    assert calls == [(c.function.name, c.function.arguments) for c in w.message.tool_calls or ()]
    assert content == (w.message.content or "")
    assert len(set(ids)) == len(ids)
    if choice != "auto":
        assert finish == "tool_calls" and calls


@pytest.mark.parametrize("parallel", [False, True])
def test_the_native_formats_grammar_holds_a_real_model_to_hermes_calls(
    client: openai.OpenAI, parallel: bool
) -> None:
    """Neither bundled model has a template that renders tools, so the native (Hermes) format is
    driven here through its parts: its grammar, compiled by llama.cpp, constrains a real
    generation, and its parser reads the calls back."""
    body = ChatCompletionRequest.model_validate(
        {"model": SMOL, "messages": [{"role": "user", "content": "x"}], "tools": TOOLS,
         "tool_choice": "required", "parallel_tool_calls": parallel}
    )  # fmt: skip
    plan = tools.plan(body, template="{{ tools }} <tool_call>")
    assert plan is not None and plan.format == "native"
    grammar = tools.grammar(plan)
    r = client.completions.create(
        model=SMOL, prompt=f"{PROMPTS['place_order']}\nCall a tool:\n", max_tokens=160,
        temperature=0, extra_body={"grammar": grammar},
    )  # fmt: skip
    text = r.choices[0].text
    assert text.startswith("<tool_call>\n")
    parser = tools.parser(plan)
    content, calls = parser.feed(text)
    content += parser.finish()[0]
    if r.choices[0].finish_reason == "stop":
        assert content == "" and calls
    for call in calls:
        assert call.done and call.id and call.name in SCHEMAS
        jsonschema.validate(json.loads(call.arguments), SCHEMAS[call.name])
    if not parallel:
        assert len(calls) == 1 and r.choices[0].finish_reason == "stop"


# -- refusals ---------------------------------------------------------------------------------


def test_the_400s_name_what_is_wrong(client: openai.OpenAI, node: RunningServer) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        ask(client, SMOL, "hi", tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "launch_rocket"}})  # fmt: skip
    assert "launch_rocket" in str(info.value) and info.value.body["param"] == "tool_choice"

    loose = json.loads(json.dumps(WEATHER))
    loose["parameters"]["properties"]["days"] = {"type": "integer", "minimum": 1, "maximum": 7}
    with pytest.raises(openai.BadRequestError) as info:
        ask(client, SMOL, "hi", tools=[tool(loose)], tool_choice="required")
    assert "'minimum'" in str(info.value)
    assert info.value.body["param"] == "tools[0].function.parameters"

    with pytest.raises(openai.BadRequestError) as info:
        ask(client, SMOL, "hi", tools=TOOLS, response_format={"type": "json_object"})
    assert info.value.body["param"] == "response_format"

    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=SMOL, messages=[*_turns(None), {"role": "tool", "content": "x"}], tools=TOOLS
        )
    assert "tool_call_id" in str(info.value)

    # the pairs: the same requests without the fault are answered
    assert ask(client, SMOL, "hi", tools=TOOLS, tool_choice="none", max_tokens=2).choices
    with httpx.Client(timeout=60) as http:  # a body the SDK's types would not let through
        r = http.post(
            f"{node.base_url}/chat/completions",
            json={"model": SMOL, "messages": [{"role": "user", "content": "x"}],
                  "tools": [{"type": "function", "function": {"name": "bad name"}}]},
        )  # fmt: skip
        assert r.status_code == 422 and "pattern" in r.text


# -- LangChain ----------------------------------------------------------------------------------


class Weather(BaseModel):
    """The current weather in a city."""

    city: str = Field(max_length=24)
    unit: str = Field(pattern="^(celsius|fahrenheit)$")


class Reading(BaseModel):
    """Record a sensor reading."""

    sensor: str = Field(max_length=16)
    value: float
    ok: bool


@pytest.mark.parametrize("model", [SMOL, GEMMA])
def test_langchain_bind_tools(node: RunningServer, model: str) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(
        model=model, base_url=node.base_url, api_key="unused", temperature=0,
        max_tokens=200, max_retries=0,
    )  # fmt: skip
    for tool_choice in ("required", "Reading"):
        bound = llm.bind_tools(
            [Weather, Reading], tool_choice=tool_choice, parallel_tool_calls=False
        )
        message = bound.invoke("Sensor temp-1 reads 20.5 and is fine.")
        assert message.tool_calls, message
        call = message.tool_calls[0]
        assert call["name"] in ("Weather", "Reading") and call["id"].startswith("call_")
        if tool_choice == "Reading":
            assert call["name"] == "Reading"
        {"Weather": Weather, "Reading": Reading}[call["name"]].model_validate(call["args"])
        # streamed, LangChain's chunks add up to the same call
        chunks = list(bound.stream("Sensor temp-1 reads 20.5 and is fine."))
        total = chunks[0]
        for c in chunks[1:]:
            total = total + c
        assert [(c["name"], c["args"]) for c in total.tool_calls] == [
            (c["name"], c["args"]) for c in message.tool_calls
        ]


# -- through the gateway ------------------------------------------------------------------------


def test_the_gateway_passes_tool_calls_through_local_and_http_backends(
    node: RunningServer, tmp_path: Path
) -> None:
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(
        "models:\n"
        f"  - {{name: local-smol, source: {SMOL}, engine: {{n_ctx: 2048, n_threads: 1}}}}\n"
        "remote_models:\n"
        f"  - name: node-smol\n    backends: [{{url: '{node.base_url}', model: {SMOL}}}]\n"
    )
    port = free_port()
    proc = spawn(
        ["serve", "--config", str(cfg), "--port", str(port), "--log-level", "warning"], port
    )
    try:
        gw = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        named = {"type": "function", "function": {"name": "get_weather"}}
        for model in ("local-smol", "node-smol"):
            whole = ask(gw, model, PROMPTS["get_weather"], tools=TOOLS, tool_choice=named, **ONE)
            choice = whole.choices[0]
            assert choice.finish_reason == "tool_calls" and choice.message.content is None
            calls = assert_valid_calls(choice, names={"get_weather"})
            assert len(calls) >= 1
            streamed = ask(gw, model, PROMPTS["get_weather"], tools=TOOLS, tool_choice=named,
                           stream=True, **ONE)  # fmt: skip
            got, _, finish, _ = reassemble(streamed)
            assert finish == "tool_calls"
            assert got == [
                (c.function.name, c.function.arguments) for c in choice.message.tool_calls
            ]
        # a refusal upstream comes back as the node said it
        rocket = {"type": "function", "function": {"name": "launch_rocket"}}
        with pytest.raises(openai.BadRequestError, match="launch_rocket"):
            ask(gw, "node-smol", "hi", tools=TOOLS, tool_choice=rocket)
    finally:
        assert stop(proc)


def test_a_cascade_serves_the_calls_of_the_model_it_keeps() -> None:
    from tests.integration.gateway.harness import start_gateway

    engine = EngineConfig(n_ctx=1024, n_threads=2, seed=1)
    gw = start_gateway(
        {
            "models": [
                ModelConfig(name=SMOL, source=SMOL, tier="edge-small", engine=engine),
                ModelConfig(name=GEMMA, source=GEMMA, tier="edge-large", engine=engine),
            ],
            "policies": [
                {"name": "keep", "kind": "cascade", "models": [SMOL, GEMMA], "threshold": -100.0},
                {
                    "name": "climb",
                    "kind": "cascade",
                    "models": [SMOL, GEMMA],
                    "threshold": 1.0,
                    "early_abort_tokens": 3,
                },
            ],
        },
        load_models=True,
    )
    try:
        client = gw.client()
        for policy, served in (("keep", SMOL), ("climb", GEMMA)):
            whole = ask(client, policy, PROMPTS["get_weather"], tools=TOOLS,
                        tool_choice="required", **ONE)  # fmt: skip
            assert whole.model == served and whole.choices[0].finish_reason == "tool_calls"
            assert len(assert_valid_calls(whole.choices[0], names=set(SCHEMAS))) == 1
            streamed = ask(client, policy, PROMPTS["get_weather"], tools=TOOLS,
                           tool_choice="required", stream=True, **ONE)  # fmt: skip
            calls, _, finish, _ = reassemble(streamed)
            assert finish == "tool_calls"
            assert calls == [
                (c.function.name, c.function.arguments) for c in whole.choices[0].message.tool_calls
            ]
    finally:
        gw.stop()
