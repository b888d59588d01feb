"""An in-process llama.cpp engine of the pool, as a gateway backend."""

from __future__ import annotations

from typing import Any

from edgellm.config import Feature
from edgellm.engine.embedding import EmbeddingResult
from edgellm.engine.engine import off_loop
from edgellm.engine.pool import EnginePool, PoolState
from edgellm.gateway.backends.base import EventStream
from edgellm.gateway.health import ReplicaState
from edgellm.gateway.request import GatewayRequest
from edgellm.wire import tools
from edgellm.wire.echo import Echo
from edgellm.wire.embeddings import EmbeddingRequest
from edgellm.wire.params import generation_request
from edgellm.wire.schemas import ChatCompletionRequest, CompletionRequest


class LocalBackend:
    kind = "engine"
    first_token_timeout_s: float | None = None  # no network: a queue wait is not a failure

    def __init__(self, pool: EnginePool, model: str, state: ReplicaState) -> None:
        self.id = f"engine:{model}"
        self.pool = pool
        self.model = model
        self.state = state

    def lacks(self, needs: frozenset[Feature]) -> frozenset[Feature]:
        return frozenset()  # the engine honours every feature

    async def open(self, call: GatewayRequest) -> tuple[EventStream, Echo]:
        engine = self.pool.get(self.model)
        body = call.body
        tool_plan = None
        if isinstance(body, ChatCompletionRequest):
            template = engine.tool_template
            tool_plan = tools.plan(body, template)
            native = tools.native_format(template)
            messages = tools.prompt_messages(call.messages or [], tool_plan, native=native)
            offered = list(tool_plan.tools) if tool_plan is not None and native else None
            size = sum(len(str(m.get("content") or "")) for m in messages)
            prompt = await off_loop(size, lambda: engine.chat_prompt(messages, tools=offered))
        else:
            text = body.prompt
            prompt = await off_loop(len(text), lambda: engine.text_prompt(text))
        gen = generation_request(
            body,
            prompt,
            max_tokens=engine.resolve_max_tokens(len(prompt), body.token_cap()),
            default_seed=engine.config.seed,
            min_top_logprobs=call.force_top_logprobs,
            tool_plan=tool_plan,
        )
        echo = Echo()  # none
        if isinstance(body, CompletionRequest) and body.echo:
            engine.check(gen)  # a request to refuse is refused before its prompt is scored
            echo = Echo(body.prompt if isinstance(body.prompt, str) else engine.detokenize(prompt))
            if body.logprobs is not None:
                # the scoring job of /v1/loglikelihood; it leaves the prompt in a slot's cache,
                # which the generation then reuses
                echo.logprobs = await engine.prompt_logprobs(prompt, body.logprobs)
        stream: EventStream = engine.submit(gen)  # a full queue raises OverloadedError (429)
        if tool_plan is not None:
            stream = tools.ToolCallStream(stream, tool_plan)
        return stream, echo

    def first_event_timeout(self, call: GatewayRequest) -> float | None:
        return None

    async def embed(self, body: EmbeddingRequest) -> EmbeddingResult:
        engine = self.pool.embedder(self.model)
        body.check_dimensions(engine.n_embd)
        return await engine.embed(body.inputs(), truncate="end" if body.truncate else None)

    async def check_health(self) -> bool:
        return self.pool.state is PoolState.READY

    def context_length(self) -> int | None:
        try:
            return self.pool.get(self.model).info.n_ctx
        except Exception:
            return None

    def count_tokens(self, messages: list[dict[str, Any]]) -> int:
        return self.pool.get(self.model).count_chat_tokens(messages)
