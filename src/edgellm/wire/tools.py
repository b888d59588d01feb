"""OpenAI tool calls on models that only generate text: the request's tools become part of the
prompt and a grammar, and the generated text is parsed back into `tool_calls`.

Two formats:

- **native**: the model's chat template describes `tools` itself (it reads the variable, as
  transformers' `apply_chat_template(tools=...)` renders it) and teaches Hermes' output format,
  `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (Qwen 2.5, Hermes, ...). The tools go
  to the template; the history's tool calls and tool results are the template's to render.
- **generic** (any other template, both bundled models): in the spirit of llama.cpp's generic
  chat format, a system message describes the tools and their parameter schemas, and the answer
  is one JSON object, `{"tool_calls": [{"name": ..., "arguments": {...}}]}` or
  `{"response": "..."}`, held to that shape by the grammar sampler. The history is rendered the
  same way (an assistant's calls and answers as those objects, tool results as a user message
  `{"tool_results": [...]}`), so a model sees in earlier turns the format it must answer in.

What the grammar guarantees: in the generic format always, and in the native format with
`required` or a named function, a call's `name` is one of the offered tools (the named one) and
its `arguments` are JSON valid against that tool's `parameters` once the call is complete;
`parallel_tool_calls: false` allows exactly one call. Native `auto` is free text: calls are
parsed from it, and a `<tool_call>` whose JSON is not a call of an offered tool stays text.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from edgellm.engine.chat_template import arguments_object
from edgellm.engine.structured import schema_grammar
from edgellm.engine.types import (
    Failed,
    Finished,
    FinishReason,
    GenerationEvent,
    TextDelta,
    ToolCallDelta,
)
from edgellm.errors import InvalidRequestError
from edgellm.wire.encode import tool_call_id
from edgellm.wire.schemas import ChatCompletionRequest, NamedToolChoice

ToolFormat = Literal["generic", "native"]
HERMES_OPEN = "<tool_call>"
HERMES_CLOSE = "</tool_call>"


@dataclass(frozen=True, slots=True)
class ToolPlan:
    """The tools a request offers the model, and how it may use them."""

    tools: tuple[dict[str, Any], ...]  # OpenAI tool objects, parameters normalised
    choice: str  # "auto", "required", or the one function's name
    parallel: bool
    format: ToolFormat

    @property
    def names(self) -> list[str]:
        return [t["function"]["name"] for t in self.tools]

    @property
    def offered(self) -> tuple[dict[str, Any], ...]:
        """The tools the model may call (the named one only, for a named choice)."""
        if self.choice in ("auto", "required"):
            return self.tools
        return tuple(t for t in self.tools if t["function"]["name"] == self.choice)


def native_format(template: str | None) -> bool:
    """Whether a template that renders `tools` teaches an output format we parse (Hermes')."""
    return template is not None and HERMES_OPEN in template


def plan(body: ChatCompletionRequest, template: str | None = None) -> ToolPlan | None:
    """What `body` offers the model (None: no tools offered, the answer is plain text), checked:
    a tool choice naming no tool, duplicate names, a parameters schema the grammar cannot
    enforce, tools with another constraint on the answer are 400s naming the field.
    `template`: the model's chat template if it renders tools itself (`Engine.tool_template`)."""
    choice = body.tool_choice
    if not body.tools:
        if choice is not None and choice != "none":
            raise InvalidRequestError(
                "tool_choice is only allowed when tools are given", param="tool_choice"
            )
        return None
    names: set[str] = set()
    tools = []
    for i, tool in enumerate(body.tools):
        fn = tool.function
        if fn.name in names:
            raise InvalidRequestError(
                f"two tools are named {fn.name!r}", param=f"tools[{i}].function.name"
            )
        names.add(fn.name)
        params = _object_schema(fn.parameters, param=f"tools[{i}].function.parameters")
        function: dict[str, Any] = {"name": fn.name, "parameters": params}
        if fn.description is not None:
            function["description"] = fn.description
        tools.append({"type": "function", "function": function})
    if choice == "none":
        return None
    if isinstance(choice, NamedToolChoice):
        name = choice.function.name
        if name not in names:
            raise InvalidRequestError(
                f"tool_choice names the function {name[:64]!r}, which is not among the tools "
                f"({', '.join(sorted(names))})",
                param="tool_choice",
            )
        mode = name
    else:
        mode = choice or "auto"
    structured = body.structured_field()
    if structured is not None:
        raise InvalidRequestError(
            f"{structured} cannot be combined with tools: the answer is a tool call or follows "
            f"{structured} (send tool_choice 'none' to answer in that format without tools)",
            param=structured,
        )
    fmt: ToolFormat = "native" if native_format(template) else "generic"
    out = ToolPlan(
        tools=tuple(tools),
        choice=mode,
        parallel=body.parallel_tool_calls is not False,
        format=fmt,
    )
    for i, spec in enumerate(out.tools):  # each schema alone first: a 400 names its tool
        schema_grammar(spec["function"]["parameters"], param=f"tools[{i}].function.parameters")
    return out


def _object_schema(schema: dict[str, Any] | None, *, param: str) -> dict[str, Any]:
    """A function's parameters: a JSON schema of an object (no parameters: an empty object)."""
    if schema is None:
        return {"type": "object", "properties": {}}
    kind = schema.get("type")
    if kind is None and not any(k in schema for k in ("$ref", "anyOf", "enum", "const")):
        return {**schema, "type": "object"}
    if kind not in (None, "object"):
        raise InvalidRequestError(
            f"a function's parameters are an object schema, not type {kind!r}", param=param
        )
    return schema


# -- the prompt -----------------------------------------------------------------------------


def prompt_messages(
    messages: list[dict[str, Any]], tool_plan: ToolPlan | None, *, native: bool
) -> list[dict[str, Any]]:
    """The messages the chat template renders. `native`: the template renders tool calls and
    results itself, so they pass unchanged; else they are written in the generic format, and
    with tools offered, a system message describes them."""
    _check_history(messages)
    if native:
        return messages
    offered = tool_plan is not None
    out: list[dict[str, Any]] = []
    names = _call_names(messages)
    results: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if role == "tool":
            call_id = str(message.get("tool_call_id"))
            results.append(
                {
                    "tool_call_id": call_id,
                    "name": names.get(call_id, message.get("name")),
                    "content": _text(message.get("content")),
                }
            )
            continue
        if results:
            out.append(_results_message(results))
            results = []
        if role == "assistant" and (message.get("tool_calls") or offered):
            out.append({"role": "assistant", "content": _assistant_json(message)})
        else:
            out.append(message)
    if results:
        out.append(_results_message(results))
    if tool_plan is not None:
        description = describe(tool_plan)
        if out and out[0].get("role") in ("system", "developer"):
            first = dict(out[0])
            first["role"] = "system"
            first["content"] = f"{_text(first.get('content'))}\n\n{description}"
            out[0] = first
        else:
            out.insert(0, {"role": "system", "content": description})
    return out


def _check_history(messages: list[dict[str, Any]]) -> None:
    for i, message in enumerate(messages):
        role = message.get("role")
        if role == "tool" and not message.get("tool_call_id"):
            raise InvalidRequestError(
                f"messages[{i}] has role 'tool' without a tool_call_id", param="messages"
            )
        if message.get("tool_calls") and role != "assistant":
            raise InvalidRequestError(
                f"messages[{i}] has tool_calls, which only an assistant message can have",
                param="messages",
            )


def _call_names(messages: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    return {
        str(call.get("id")): str(call["function"]["name"])
        for m in messages
        for call in m.get("tool_calls") or ()
    }


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(
        str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text"
    )


def _assistant_json(message: Mapping[str, Any]) -> str:
    calls = message.get("tool_calls") or []
    text = _text(message.get("content"))
    answer: dict[str, Any] = {}
    if calls:
        answer["tool_calls"] = [
            {
                "name": call["function"]["name"],
                "arguments": arguments_object(call["function"].get("arguments")),
                "id": call.get("id"),
            }
            for call in calls
        ]
    if text or not calls:
        answer["response"] = text
    return json.dumps(answer, ensure_ascii=False)


def _results_message(results: list[dict[str, Any]]) -> dict[str, Any]:
    return {"role": "user", "content": json.dumps({"tool_results": results}, ensure_ascii=False)}


def describe(tool_plan: ToolPlan) -> str:
    """The generic format's system text: the tools, their schemas, and the answer's shape."""
    listed = json.dumps(
        [t["function"] for t in tool_plan.offered], ensure_ascii=False, separators=(",", ":")
    )
    call = '{"name": "<tool name>", "arguments": {<its parameters>}}'
    calls = call if not tool_plan.parallel else f"{call}, ..."
    if tool_plan.choice == "auto":
        shape = (
            f'either {{"tool_calls": [{calls}]}} to call tools (their results come back in '
            'the next message), or {"response": "<your answer>"} to answer directly.'
        )
    elif tool_plan.choice == "required":
        shape = f'{{"tool_calls": [{calls}]}}, calling the tools the request needs.'
    else:
        named = call.replace("<tool name>", tool_plan.choice)
        shape = f'{{"tool_calls": [{named}]}}, calling the tool {tool_plan.choice}.'
    one = " Call one tool at a time." if not tool_plan.parallel else ""
    return (
        f"You can call these tools (JSON schemas of their parameters):\n{listed}\n\n"
        f"Answer with one JSON object: {shape}{one}"
    )


# -- the grammar ----------------------------------------------------------------------------


def grammar(tool_plan: ToolPlan) -> str | None:
    """The GBNF grammar of the answer (None: free text, native format with `auto`)."""
    defs: dict[str, Any] = {}
    variants = []
    for i, tool in enumerate(tool_plan.offered):
        defs[f"tool{i}"] = _rebased(tool["function"]["parameters"], f"#/$defs/tool{i}")
        variants.append(
            {
                "type": "object",
                "properties": {
                    "name": {"const": tool["function"]["name"]},
                    "arguments": {"$ref": f"#/$defs/tool{i}"},
                },
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    call: dict[str, Any] = variants[0] if len(variants) == 1 else {"anyOf": variants}
    if tool_plan.format == "native":
        if tool_plan.choice == "auto":
            return None
        rules = schema_grammar({**call, "$defs": defs}, param="tools")
        rules = re.sub(r"^root ::=", "tool-call ::=", rules, count=1, flags=re.M)
        if re.search(r"\broot\b", rules):
            raise InvalidRequestError(
                "a parameters schema refers to its whole document ('#'): not supported with "
                "this model's tool format",
                param="tools",
            )
        one = f'"{HERMES_OPEN}\\n" tool-call "\\n{HERMES_CLOSE}"'
        more = f' ("\\n" {one})*' if tool_plan.parallel else ""
        return f"{rules}\nroot ::= {one}{more}\n"
    calls: dict[str, Any] = {"type": "array", "items": call, "minItems": 1}
    if not tool_plan.parallel:
        calls["maxItems"] = 1
    calling = {
        "type": "object",
        "properties": {"tool_calls": calls},
        "required": ["tool_calls"],
        "additionalProperties": False,
    }
    if tool_plan.choice != "auto":
        return schema_grammar({**calling, "$defs": defs}, param="tools")
    answering = {
        "type": "object",
        "properties": {"response": {"type": "string"}},
        "required": ["response"],
        "additionalProperties": False,
    }
    return schema_grammar({"anyOf": [calling, answering], "$defs": defs}, param="tools")


def _rebased(node: Any, base: str) -> Any:
    """A tool's schema moved under `base`: its local references ('#/...') follow it."""
    if isinstance(node, list):
        return [_rebased(v, base) for v in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str) and value.startswith("#"):
            out[key] = base + value[1:]
        else:
            out[key] = _rebased(value, base)
    return out


# -- parsing the answer ---------------------------------------------------------------------


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}


class _JsonString:
    """A JSON string's body decoded character by character (after its opening quote)."""

    __slots__ = ("closed", "escape", "hex", "high")

    def __init__(self) -> None:
        self.closed = False
        self.escape = False
        self.hex: str | None = None
        self.high: int | None = None  # a high surrogate waiting for its low half

    def push(self, ch: str) -> str:
        if self.hex is not None:
            self.hex += ch
            if len(self.hex) < 4:
                return ""
            code, self.hex = int(self.hex, 16), None
            if 0xDC00 <= code < 0xE000 and self.high is not None:
                high, self.high = self.high, None
                return chr(0x10000 + ((high - 0xD800) << 10) + (code - 0xDC00))
            lone = self._lone()
            if 0xD800 <= code < 0xDC00:
                self.high = code
                return lone
            # a lone low surrogate cannot be encoded as UTF-8: the replacement character
            return lone + ("\ufffd" if 0xDC00 <= code < 0xE000 else chr(code))
        if self.escape:
            self.escape = False
            if ch == "u":
                self.hex = ""
                return ""
            return self._lone() + _ESCAPES.get(ch, ch)
        if ch == "\\":
            self.escape = True
            return ""
        lone = self._lone()
        if ch == '"':
            self.closed = True
            return lone
        return lone + ch

    def _lone(self) -> str:
        if self.high is None:
            return ""
        self.high = None
        return "\ufffd"


@dataclass(slots=True)
class _Call:
    index: int
    id: str
    name: str = ""
    arguments: list[str] = field(default_factory=list)
    done: bool = False


class GenericParser:
    """The generic format's answer, read as it is generated: the `response` string's text as
    it arrives, each call's name once read whole and its `arguments` text fragment by fragment.
    The grammar guarantees the shape; anything else (a model without the grammar) is skipped."""

    def __init__(self) -> None:
        self._state = "start"
        self._key = _JsonString()
        self._key_text = ""
        self._string = _JsonString()
        self._depth = 0
        self._in_str = False
        self._esc = False
        self.calls: list[_Call] = []

    @property
    def called(self) -> bool:
        return bool(self.calls)

    def feed(self, text: str) -> tuple[str, list[ToolCallDelta]]:
        content: list[str] = []
        deltas: list[ToolCallDelta] = []
        for ch in text:
            self._step(ch, content, deltas)
        return "".join(content), _merged(deltas)

    def finish(self) -> tuple[str, list[ToolCallDelta]]:
        return "", []

    def _step(self, ch: str, content: list[str], deltas: list[ToolCallDelta]) -> None:
        state = self._state
        if state == "start":
            if ch == "{":
                self._state = "key"
            return
        if state == "calls":  # between the calls of the list
            if ch == "{":
                self.calls.append(_Call(index=len(self.calls), id=tool_call_id()))
                self._state = "call"
            elif ch == "]":
                self._state = "tail"
            return
        if state == "call":  # between the members of a call
            if ch == '"':
                self._begin_key("call_key")
            elif ch == "}":
                self._state = "calls"
            return
        if state == "key":
            if ch == '"':
                self._begin_key("key_text")
            return
        if state in ("key_text", "call_key"):
            self._key_text += self._key.push(ch)
            if self._key.closed:
                self._state = "colon" if state == "key_text" else "call_colon"
            return
        if state in ("colon", "call_colon"):
            if ch == ":":
                self._state = "value" if state == "colon" else "call_value"
            return
        if state == "value":
            if ch.isspace():
                return
            if self._key_text == "response" and ch == '"':
                self._string = _JsonString()
                self._state = "response"
            elif self._key_text == "tool_calls" and ch == "[":
                self._state = "calls"
            else:
                self._state = "tail"
            return
        if state == "response":
            content.append(self._string.push(ch))
            if self._string.closed:
                self._state = "tail"
            return
        if state == "call_value":
            if ch.isspace():
                return
            if self._key_text == "name" and ch == '"':
                self._string = _JsonString()
                self._state = "name"
                return
            self._depth, self._in_str, self._esc = 0, False, False
            self._state = "arguments" if self._key_text == "arguments" else "skip"
            self._raw(ch, deltas)
            return
        if state == "name":
            call = self.calls[-1]
            call.name += self._string.push(ch)
            if self._string.closed:
                deltas.append(ToolCallDelta(index=call.index, id=call.id, name=call.name))
                self._state = "call"
            return
        if state in ("arguments", "skip"):
            self._raw(ch, deltas)
        # "tail": the rest of the object, nothing to read

    def _begin_key(self, state: str) -> None:
        self._key = _JsonString()
        self._key_text = ""
        self._state = state

    def _raw(self, ch: str, deltas: list[ToolCallDelta]) -> None:
        """One character of a value copied as text (a call's arguments), until it closes."""
        closed = False
        if self._in_str:
            if self._esc:
                self._esc = False
            elif ch == "\\":
                self._esc = True
            elif ch == '"':
                self._in_str = False
                closed = self._depth == 0
        elif ch == '"':
            self._in_str = True
        elif ch in "{[":
            self._depth += 1
        elif ch in "}]":
            self._depth -= 1
            closed = self._depth == 0
        if self._state == "arguments":
            call = self.calls[-1]
            call.arguments.append(ch)
            call.done = closed
            deltas.append(ToolCallDelta(index=call.index, arguments=ch, done=closed))
        if closed:
            self._state = "call"


def _merged(deltas: list[ToolCallDelta]) -> list[ToolCallDelta]:
    """Consecutive argument fragments of one call as one delta."""
    out: list[ToolCallDelta] = []
    for d in deltas:
        last = out[-1] if out else None
        if (
            last is not None
            and last.index == d.index
            and d.id is None
            and d.name is None
            and not last.done
        ):
            out[-1] = ToolCallDelta(
                index=d.index,
                id=last.id,
                name=last.name,
                arguments=last.arguments + d.arguments,
                done=d.done,
            )
        else:
            out.append(d)
    return out


class HermesParser:
    """Hermes' format: text, and calls as `<tool_call>{"name": ..., "arguments": {...}}
    </tool_call>`. A call is given whole when its closing tag arrives; one whose JSON is not a
    call of an offered tool stays in the text, as generated."""

    def __init__(self, names: Iterable[str]) -> None:
        self._names = set(names)
        self._buffer = ""
        self._in_call = False
        self._space = ""
        self.calls: list[_Call] = []

    @property
    def called(self) -> bool:
        return bool(self.calls)

    def feed(self, text: str) -> tuple[str, list[ToolCallDelta]]:
        self._buffer += text
        content: list[str] = []
        deltas: list[ToolCallDelta] = []
        while True:
            if not self._in_call:
                at = self._buffer.find(HERMES_OPEN)
                if at < 0:
                    keep = _partial_suffix(self._buffer, HERMES_OPEN)
                    content.append(self._buffer[: len(self._buffer) - keep])
                    self._buffer = self._buffer[len(self._buffer) - keep :]
                    break
                content.append(self._buffer[:at])
                self._buffer = self._buffer[at + len(HERMES_OPEN) :]
                self._in_call = True
            end = self._buffer.find(HERMES_CLOSE)
            if end < 0:
                break
            body, self._buffer = self._buffer[:end], self._buffer[end + len(HERMES_CLOSE) :]
            self._in_call = False
            delta = self._call(body)
            if delta is None:
                content.append(HERMES_OPEN + body + HERMES_CLOSE)
            else:
                deltas.append(delta)
        return self._text("".join(content)), deltas

    def _text(self, text: str) -> str:
        """Whitespace is held until text follows it: around calls it is the format's."""
        if not text.strip():
            self._space += text
            return ""
        text, self._space = self._space + text, ""
        return text

    def finish(self) -> tuple[str, list[ToolCallDelta]]:
        """What is left: held-back text (an unfinished call is dropped: it is not a call)."""
        rest = "" if self._in_call else self._buffer
        self._buffer = ""
        text = self._text(rest)
        return (text or ("" if self.calls else self._space)), []

    def _call(self, body: str) -> ToolCallDelta | None:
        try:
            data = json.loads(body)
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("name") not in self._names:
            return None
        args = data.get("arguments", {})
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                return None
        if not isinstance(args, dict):
            return None
        call = _Call(index=len(self.calls), id=tool_call_id(), name=data["name"], done=True)
        call.arguments.append(json.dumps(args, ensure_ascii=False))
        self.calls.append(call)
        return ToolCallDelta(
            index=call.index, id=call.id, name=call.name, arguments=call.arguments[0], done=True
        )


def _partial_suffix(text: str, tag: str) -> int:
    """The length of the longest end of `text` that begins `tag` (held back: it may be one)."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0


Parser = GenericParser | HermesParser


def parser(tool_plan: ToolPlan) -> Parser:
    if tool_plan.format == "native":
        return HermesParser(t["function"]["name"] for t in tool_plan.offered)
    return GenericParser()


class ToolCallStream:
    """An engine's event stream with its generated text parsed: content as text deltas (each
    keeps its tokens' ids and log-probs, with empty text when they were the format's), calls
    as `ToolCallDelta`s, and `finish_reason` `tool_calls` when the answer called tools."""

    def __init__(self, stream: Any, tool_plan: ToolPlan) -> None:
        self._stream = stream
        self._parser = parser(tool_plan)

    def cancel(self) -> None:
        self._stream.cancel()

    async def __aiter__(self) -> AsyncIterator[GenerationEvent]:
        p = self._parser
        async for event in self._stream:
            if isinstance(event, TextDelta):
                text, calls = p.feed(event.text)
                for call in calls:
                    yield call
                yield TextDelta(text, event.token_ids, event.logprobs)
            elif isinstance(event, Finished):
                text, calls = p.finish()
                for call in calls:
                    yield call
                if text:
                    yield TextDelta(text, ())
                if event.reason is FinishReason.STOP and p.called:
                    event = Finished(
                        FinishReason.TOOL_CALLS,
                        event.prompt_tokens,
                        event.completion_tokens,
                        event.timings,
                    )
                yield event
                return
            else:
                yield event
                if isinstance(event, Failed):
                    return
