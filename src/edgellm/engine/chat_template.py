"""Chat formatting with the model's own template (the GGUF `tokenizer.chat_template`).

Templates are Hugging Face Jinja templates; we render them the way `transformers` does
(sandboxed, `trim_blocks`/`lstrip_blocks`, `raise_exception`, `strftime_now`). A model without a
template (base models such as Gemma-3-270M) gets its family's format if we know it, else ChatML,
which is also what llama.cpp falls back to.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, NoReturn

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from edgellm.errors import InvalidRequestError

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Gemma's instruction format (from the Gemma 3 instruction-tuned template, without its check that
# roles alternate, so that a base model accepts any message list).
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{% set first_user_prefix = messages[0]['content'] + '\n\n' %}"
    "{% set loop_messages = messages[1:] %}"
    "{% else %}{% set first_user_prefix = '' %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

FALLBACK_BY_ARCHITECTURE = {
    "gemma": GEMMA_TEMPLATE,
    "gemma2": GEMMA_TEMPLATE,
    "gemma3": GEMMA_TEMPLATE,
}


def _raise_exception(message: str) -> NoReturn:
    raise InvalidRequestError(f"chat template: {message}", param="messages")


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # transformers' filter: Jinja's own escapes <, >, & and ' for HTML, which a prompt must not
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


@lru_cache(maxsize=16)
def _compile(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.filters["tojson"] = _tojson
    return env.from_string(source)


def message_text(content: Any) -> str:
    """OpenAI message content: a string, or a list of parts of which we keep the text ones."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        texts: list[str] = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text":
                texts.append(str(part.get("text", "")))
            else:
                raise InvalidRequestError(
                    "only text content parts are supported by this model", param="messages"
                )
        return "".join(texts)
    raise InvalidRequestError("message content must be a string or a list of parts")


class ChatTemplate:
    """Renders a list of OpenAI-style messages into the prompt text a model was trained on."""

    def __init__(
        self,
        source: str | None,
        *,
        bos_token: str,
        eos_token: str,
        architecture: str | None = None,
    ) -> None:
        fallback = FALLBACK_BY_ARCHITECTURE.get(architecture or "", CHATML_TEMPLATE)
        self.source = source or fallback
        self.is_fallback = source is None
        self.bos_token = bos_token
        self.eos_token = eos_token

    @property
    def renders_tools(self) -> bool:
        """Whether the template describes `tools` itself (its source reads the variable), as
        transformers' `apply_chat_template(tools=...)` relies on."""
        return not self.is_fallback and "tools" in self.source

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> str:
        normalized = [_normalized(m) for m in messages]
        extra: dict[str, Any] = {} if tools is None else {"tools": list(tools)}
        try:
            return _compile(self.source).render(
                messages=normalized,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                **extra,
            )
        except InvalidRequestError:
            raise
        except jinja2.TemplateError as exc:
            raise InvalidRequestError(f"chat template failed: {exc}", param="messages") from exc


def _normalized(message: Mapping[str, Any]) -> dict[str, Any]:
    """A message as templates read it: text content, plus the tool fields when present (tool
    calls with their arguments as objects, as transformers' templates expect them)."""
    out: dict[str, Any] = {
        "role": str(message["role"]),
        "content": message_text(message.get("content")),
    }
    for key in ("name", "tool_call_id"):
        if message.get(key) is not None:
            out[key] = str(message[key])
    calls = message.get("tool_calls")
    if calls:
        out["tool_calls"] = [
            {
                "id": call.get("id"),
                "type": "function",
                "function": {
                    "name": call["function"]["name"],
                    "arguments": arguments_object(call["function"].get("arguments")),
                },
            }
            for call in calls
        ]
    return out


def arguments_object(arguments: Any) -> Any:
    """A tool call's arguments (OpenAI sends them as JSON text) as the object they encode; text
    that is not JSON is kept as it is, so the model sees what the client sent."""
    if not isinstance(arguments, str):
        return arguments
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments
