"""OpenAI wire format: requests and responses as pydantic models.

Every request field is honoured, ignored by design, or refused, never silently dropped: an
unknown field is a 400 naming it (as OpenAI answers), and an OpenAI field EdgeLLM cannot act
on is accepted only at its neutral value (`store: false`, `best_of: 1`, ...), a 400 naming it
otherwise. docs/api.md lists every field with its treatment. EdgeLLM additions are marked:
`timings` on responses (llama-server's object), llama.cpp's sampling extensions (`top_k`,
`min_p`, `repeat_penalty`, `ignore_eos`, `grammar`, `json_schema`) on requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError, core_schema

from edgellm.config import MAX_ESCALATION_DEADLINE_S, Feature
from edgellm.engine.engine import MAX_GRAMMAR_CHARS
from edgellm.engine.penalties import MAX_REPEAT_PENALTY, MIN_REPEAT_PENALTY, PenaltySettings
from edgellm.engine.structured import JSON_OBJECT_SCHEMA, schema_grammar
from edgellm.errors import InvalidRequestError

MAX_STOP_SEQUENCES = 4
MAX_TOP_LOGPROBS = 20
MAX_LOGIT_BIAS = 1024  # entries; each is a token id the engine checks against its vocabulary
INT32_MAX = 2**31 - 1  # llama.cpp's sampler parameters are int32


# What the validators below accept, written into the JSON schema too (clients and fuzzers read
# the limits from /openapi.json instead of learning them from 422s).
_STOP_SCHEMA = WithJsonSchema(
    {
        "anyOf": [
            {"type": "string"},
            {
                "type": "array",
                "items": {"type": "string", "minLength": 1},
                "maxItems": MAX_STOP_SEQUENCES,
            },
            {"type": "null"},
        ]
    }
)
_LOGIT_BIAS_SCHEMA = WithJsonSchema(
    {
        "anyOf": [
            {
                "type": "object",
                "propertyNames": {"pattern": "^[0-9]{1,10}$"},
                "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100},
                "maxProperties": MAX_LOGIT_BIAS,
            },
            {"type": "null"},
        ]
    }
)
# an empty prompt is refused (400) by the engine
_PROMPT_SCHEMA = WithJsonSchema(
    {
        "anyOf": [
            {"type": "string", "minLength": 1},
            {"type": "array", "items": {"type": "integer"}, "minItems": 1},
            {
                "type": "array",
                "items": {"type": "string", "minLength": 1},
                "minItems": 1,
                "maxItems": 1,
            },
            {
                "type": "array",
                "items": {"type": "array", "items": {"type": "integer"}, "minItems": 1},
                "minItems": 1,
                "maxItems": 1,
            },
        ]
    }
)


UNSUPPORTED = "unsupported_value"  # the pydantic error type of a field refused by design


@dataclass(frozen=True, eq=False)
class Only:
    """Field metadata: an OpenAI field EdgeLLM accepts only at its neutral values `allowed`;
    any other value is refused with `reason` (a 400 naming the field). The JSON schema says
    what is accepted (`schema`), so clients and fuzzers see it."""

    allowed: tuple[object, ...]
    reason: str
    schema: dict[str, Any]

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        def check(value: object) -> object:
            if value not in self.allowed:
                raise PydanticCustomError(UNSUPPORTED, self.reason)
            return value

        return core_schema.no_info_after_validator_function(check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        return dict(self.schema)


_NULL: dict[str, Any] = {"type": "null"}


class _Request(BaseModel):
    # an unknown field is refused, not dropped: a client that sent it expects it to act
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Request):
    include_usage: bool = False
    include_obfuscation: bool | None = Field(
        None, description="ignored: EdgeLLM adds no padding to stream events"
    )


MAX_TOOLS = 128  # OpenAI's limit
TOOL_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"  # OpenAI's function names


class ToolCallFunction(_Request):
    name: str = Field(min_length=1)
    arguments: str = Field(description="the arguments as a JSON text")


class ToolCall(_Request):
    """A call in an assistant message of the history."""

    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunction


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = Field(None, description="assistant messages: its calls")
    tool_call_id: str | None = Field(None, description="tool messages: the call answered")
    # an answer's message sent back as history by the SDKs carries these output fields
    refusal: str | None = Field(None, description="ignored: an answer's output field")
    annotations: list[Any] | None = Field(None, description="ignored: an answer's output field")
    audio: Annotated[Any, Only((None,), "audio is not supported", _NULL)] = None
    function_call: Annotated[
        Any, Only((None,), "function_call is deprecated by OpenAI: use tool_calls", _NULL)
    ] = None


class FunctionDefinition(_Request):
    name: str = Field(pattern=TOOL_NAME_PATTERN)
    description: str | None = None
    parameters: dict[str, Any] | None = Field(
        None, description="a JSON schema of an object; the arguments always follow it"
    )
    strict: bool | None = Field(
        None, description="arguments always follow the schema, whatever this says"
    )


class Tool(_Request):
    type: Literal["function"]
    function: FunctionDefinition


class ToolChoiceFunction(_Request):
    name: str = Field(min_length=1)


class NamedToolChoice(_Request):
    type: Literal["function"]
    function: ToolChoiceFunction


class JsonSchemaFormat(_Request):
    """`response_format.json_schema`: the schema every answer must validate against."""

    model_config = ConfigDict(
        extra="forbid", serialize_by_alias=True, validate_by_name=True, validate_by_alias=True
    )
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = Field(
        None, description="answers always follow the schema, whatever this says"
    )


class ResponseFormat(_Request):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema is given with type 'json_schema', and only then")
        return self


class _SamplingFields(_Request):
    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=0)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=1, description="one choice per request")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: Annotated[str | list[str] | None, _STOP_SCHEMA] = None
    seed: int | None = None
    # OpenAI fields with nothing to act on here (docs/api.md: ignored by design, and why)
    user: str | None = Field(None, description="ignored: EdgeLLM monitors no end users")
    safety_identifier: str | None = Field(None, description="ignored, as `user`")
    metadata: dict[str, str] | None = Field(
        None, max_length=16, description="ignored: EdgeLLM stores no answers to tag"
    )
    prompt_cache_key: str | None = Field(
        None,
        description="ignored: prompt prefixes are cached and routed to automatically",
    )
    store: Annotated[
        Any,
        Only(
            (None, False),
            "EdgeLLM stores no answers: store must be false",
            {"anyOf": [{"const": False}, _NULL]},
        ),
    ] = None
    service_tier: Annotated[
        Any,
        Only(
            (None, "auto", "default"),
            "EdgeLLM has one service tier: send auto or default",
            {"anyOf": [{"enum": ["auto", "default"]}, _NULL]},
        ),
    ] = None
    logit_bias: Annotated[dict[str, float] | None, _LOGIT_BIAS_SCHEMA] = Field(
        None,
        max_length=MAX_LOGIT_BIAS,
        description="token id (as a string) → bias in [-100, 100] added to its logit",
    )
    presence_penalty: float = Field(
        0.0,
        ge=-2.0,
        le=2.0,
        description="subtracted once from the logit of every token the answer already holds",
    )
    frequency_penalty: float = Field(
        0.0,
        ge=-2.0,
        le=2.0,
        description="subtracted from a token's logit per time the answer already holds it",
    )
    # llama.cpp sampling extensions
    top_k: int = Field(0, ge=0, le=INT32_MAX)
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    repeat_penalty: float = Field(
        1.0,
        ge=MIN_REPEAT_PENALTY,
        le=MAX_REPEAT_PENALTY,
        description="llama.cpp: divides positive (multiplies negative) "
        "logits of the last repeat_last_n tokens of prompt and answer; 1 = off",
    )
    repeat_last_n: int = Field(
        64,
        ge=-1,
        le=INT32_MAX,
        description="llama.cpp: tokens the repeat penalty looks back "
        "over (0: none, -1: the whole context)",
    )
    ignore_eos: bool = False
    response_format: ResponseFormat | None = None
    # llama-server's structured-output extensions
    grammar: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_GRAMMAR_CHARS,
        description="llama-server extension: a GBNF grammar (root rule `root`) the answer follows",
    )
    json_schema: dict[str, Any] | None = Field(
        None, description="llama-server extension: a JSON schema the answer validates against"
    )
    escalation_deadline_s: float | None = Field(
        None,
        gt=0,
        le=MAX_ESCALATION_DEADLINE_S,
        strict=True,
        description="EdgeLLM gateway, cascade policies: the longest wait in seconds for a higher "
        "tier's first token before the lower tier's answer is served (overrides the policy's)",
    )

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list):
            if len(v) > MAX_STOP_SEQUENCES:
                raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences")
            if any(not s for s in v):
                raise ValueError("stop sequences must not be empty")
        return v

    @field_validator("logit_bias")
    @classmethod
    def _check_logit_bias(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        for key, bias in (v or {}).items():
            # isdecimal alone admits "٣"; ten digits hold any int32 token id
            if not (key.isascii() and key.isdecimal() and len(key) <= 10):
                raise ValueError(f"keys must be token ids, got {key[:40]!r}")
            if not -100.0 <= bias <= 100.0:
                raise ValueError(f"bias of token {key} must be in [-100, 100], got {bias}")
        return v

    def token_cap(self) -> int | None:
        """The most tokens the client lets the answer have (None: up to the context window)."""
        return self.max_tokens

    def structured_field(self) -> str | None:
        """The first field that constrains the answer's text (None: free text)."""
        fmt = self.response_format
        if fmt is not None and fmt.type != "text":
            return "response_format"
        if self.json_schema is not None:
            return "json_schema"
        return "grammar" if self.grammar is not None else None

    def structured_grammar(self) -> str | None:
        """The GBNF grammar the answer must follow (None: free text), from `response_format`,
        `json_schema` or `grammar`, at most one of them; a schema keyword the grammar could not
        enforce is a 400 naming it."""
        fmt = self.response_format
        asked = [
            name
            for name, given in (
                ("response_format", fmt is not None and fmt.type != "text"),
                ("json_schema", self.json_schema is not None),
                ("grammar", self.grammar is not None),
            )
            if given
        ]
        if len(asked) > 1:
            raise InvalidRequestError(
                f"{' and '.join(asked)} both constrain the answer: send one of them",
                param=asked[1],
            )
        if self.grammar is not None:
            return self.grammar
        if self.json_schema is not None:
            return schema_grammar(self.json_schema, param="json_schema")
        if fmt is None or fmt.type == "text":
            return None
        if fmt.json_schema is None:
            return schema_grammar(dict(JSON_OBJECT_SCHEMA), param="response_format")
        schema = fmt.json_schema.schema_ if fmt.json_schema.schema_ is not None else {}
        return schema_grammar(schema, param="response_format")

    def penalties(self) -> PenaltySettings:
        return PenaltySettings(
            presence=self.presence_penalty,
            frequency=self.frequency_penalty,
            repeat=self.repeat_penalty,
            repeat_last_n=self.repeat_last_n,
        )

    def needs(self) -> frozenset[Feature]:
        """What the server answering this request must honour beyond plain generation."""
        fmt = self.response_format
        needed: set[Feature] = set()
        if self.json_schema is not None or (fmt is not None and fmt.type != "text"):
            needed.add("structured_output")
        if self.grammar is not None:
            needed.add("grammar")
        return frozenset(needed | self._needs())

    def _needs(self) -> set[Feature]:
        return set()

    def logit_bias_pairs(self) -> tuple[tuple[int, float], ...]:
        return tuple((int(k), b) for k, b in (self.logit_bias or {}).items())

    def stop_sequences(self) -> tuple[str, ...]:
        if self.stop is None or self.stop == "":
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=0)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    # EdgeLLM gateway: the gateway keeps this conversation's history (send only the new turns)
    conversation_id: str | None = Field(None, min_length=1, max_length=200)
    tools: list[Tool] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = Field(
        None, description="false: at most one call per answer (default true)"
    )
    modalities: Annotated[
        Any,
        Only(
            (None, ["text"]),
            "only text output is supported",
            {
                "anyOf": [
                    {"type": "array", "items": {"const": "text"}, "minItems": 1, "maxItems": 1},
                    _NULL,
                ]
            },
        ),
    ] = None
    prediction: dict[str, Any] | None = Field(
        None, description="ignored: a latency hint that never changes the answer"
    )
    prompt_cache_options: dict[str, Any] | None = Field(
        None, description="ignored: prompt prefixes are cached without breakpoints"
    )
    prompt_cache_retention: Annotated[
        Any,
        Only(
            (None, "in_memory"),
            "cached prefixes live in each node's memory only: send in_memory",
            {"anyOf": [{"const": "in_memory"}, _NULL]},
        ),
    ] = None
    moderation: Annotated[
        Any, Only((None,), "EdgeLLM runs no moderation of requests or answers", _NULL)
    ] = None
    audio: Annotated[Any, Only((None,), "audio output is not supported", _NULL)] = None
    reasoning_effort: Annotated[
        Any, Only((None,), "the models served here do not reason before answering", _NULL)
    ] = None
    verbosity: Annotated[
        Any, Only((None,), "verbosity is a setting of OpenAI's own models", _NULL)
    ] = None
    web_search_options: Annotated[Any, Only((None,), "web search is not supported", _NULL)] = None
    functions: Annotated[
        Any, Only((None,), "functions is deprecated by OpenAI: use tools", _NULL)
    ] = None
    function_call: Annotated[
        Any, Only((None,), "function_call is deprecated by OpenAI: use tool_choice", _NULL)
    ] = None

    def _needs(self) -> set[Feature]:
        needed: set[Feature] = {"logprobs"} if self.logprobs else set()
        if self.tools and self.tool_choice != "none":
            needed.add("tools")
        return needed

    def token_cap(self) -> int | None:
        return (
            self.max_completion_tokens
            if self.max_completion_tokens is not None
            else self.max_tokens
        )


class CompletionRequest(_SamplingFields):
    prompt: Annotated[str | list[int], _PROMPT_SCHEMA] = Field(
        description="one prompt: text, token ids, or a list of one of them (lm-eval's shape)"
    )
    logprobs: int | None = Field(
        None,
        ge=0,
        le=MAX_TOP_LOGPROBS,
        description="log-probs of each token with this many alternatives; with `echo`, the "
        "prompt's tokens too (the first one's null)",
    )
    echo: bool = False
    best_of: Annotated[
        Any,
        Only(
            (None, 1),
            "one choice per request: best_of must be 1",
            {"anyOf": [{"const": 1}, _NULL]},
        ),
    ] = None
    suffix: Annotated[
        Any,
        Only(
            (None, ""),
            "text after the insertion point (suffix) is not supported",
            {"anyOf": [{"const": ""}, _NULL]},
        ),
    ] = None

    def _needs(self) -> set[Feature]:
        needed: set[Feature] = {"logprobs"} if self.logprobs is not None else set()
        if self.echo:
            needed.add("echo")
        return needed

    @field_validator("prompt", mode="before")
    @classmethod
    def _one_prompt(cls, v: object) -> object:
        if isinstance(v, list) and v and all(isinstance(p, str | list) for p in v):
            if len(v) != 1:
                raise ValueError("one prompt per request (send several requests for a batch)")
            return v[0]
        return v


class _StrictRequest(_Request):
    """EdgeLLM's own endpoints take values of the documented JSON type only (no `0` for false,
    no `"5"` for 5): OpenAI's endpoints coerce, so theirs stay lax for compatibility."""

    model_config = ConfigDict(extra="forbid", strict=True)


class LoglikelihoodItem(_StrictRequest):
    context: str
    continuation: str = Field(min_length=1)


class LoglikelihoodRequestBody(_StrictRequest):
    """EdgeLLM extension: score continuations (accuracy evals, cascade confidence)."""

    model: str = Field(min_length=1)
    items: list[LoglikelihoodItem] = Field(min_length=1, max_length=1024)


class TokenizeRequest(_StrictRequest):
    """llama-server compatible `/tokenize` (with an optional model name)."""

    content: str
    add_special: bool = False
    model: str | None = None


class DetokenizeRequest(_StrictRequest):
    tokens: list[int]
    model: str | None = None


# -- responses ------------------------------------------------------------------------------


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Usage(_Response):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: dict[str, int] | None = None


class TopLogprobOut(_Response):
    token: str
    logprob: float
    bytes: list[int]


class ChatTokenLogprob(_Response):
    token: str
    logprob: float
    bytes: list[int]
    top_logprobs: list[TopLogprobOut]


class ChatLogprobs(_Response):
    content: list[ChatTokenLogprob]


class CompletionLogprobs(_Response):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class ToolCallFunctionOut(_Response):
    name: str
    arguments: str


class ToolCallOut(_Response):
    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunctionOut


class AssistantMessage(_Response):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCallOut] | None = None


class ToolCallFunctionDelta(_Response):
    name: str | None = None
    arguments: str | None = None


class ToolCallDeltaOut(_Response):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: ToolCallFunctionDelta


class ChatChoice(_Response):
    index: int = 0
    message: AssistantMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str


class ChatCompletion(_Response):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChatChoice]
    usage: Usage
    timings: dict[str, float | int]
    route: dict[str, Any] | None = None  # EdgeLLM gateway: what routing did


class ChatDelta(_Response):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDeltaOut] | None = None


class ChatChunkChoice(_Response):
    index: int = 0
    delta: ChatDelta
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(_Response):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
    timings: dict[str, float | int] | None = None
    route: dict[str, Any] | None = None


class CompletionChoice(_Response):
    index: int = 0
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None


class Completion(_Response):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    timings: dict[str, float | int] | None = None
    route: dict[str, Any] | None = None


class ModelCard(_Response):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "edgellm"
    meta: dict[str, Any] | None = None


class ModelList(_Response):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class LoglikelihoodOut(_Response):
    index: int
    logprob: float
    is_greedy: bool
    n_tokens: int
    token_logprobs: list[float]


class LoglikelihoodResponse(_Response):
    object: Literal["list"] = "list"
    model: str
    data: list[LoglikelihoodOut]


class TokenizeResponse(_Response):
    tokens: list[int]


class DetokenizeResponse(_Response):
    content: str


class HealthResponse(_Response):
    status: Literal["ok", "loading", "failed"]
    models: list[str] | None = None  # when ready
    error: str | None = None  # when loading failed


class ErrorDetail(_Response):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(_Response):
    error: ErrorDetail
