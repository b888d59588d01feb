"""An in-process llama.cpp engine of the pool, as a gateway backend."""

from __future__ import annotations

from typing import Any

from edgellm.api.schemas import ChatCompletionRequest, CompletionRequest
from edgellm.engine.engine import off_loop
from edgellm.engine.pool import EnginePool, PoolState
from edgellm.engine.types import GenerationRequest, SamplingParams
from edgellm.gateway.backends.base import EventStream
from edgellm.gateway.call import Call
from edgellm.gateway.health import ReplicaState


class LocalBackend:
    kind = "engine"
    first_token_timeout_s: float | None = None  # no network: a queue wait is not a failure

    def __init__(self, pool: EnginePool, model: str, state: ReplicaState) -> None:
        self.id = f"engine:{model}"
        self.pool = pool
        self.model = model
        self.state = state

    async def open(self, call: Call) -> tuple[EventStream, str]:
        engine = self.pool.get(self.model)
        body = call.body
        echo = ""
        if isinstance(body, ChatCompletionRequest):
            messages = call.messages or []
            size = sum(len(str(m.get("content") or "")) for m in messages)
            prompt = await off_loop(size, lambda: engine.chat_prompt(messages))
            max_tokens = engine.resolve_max_tokens(len(prompt), body.token_cap())
            want, top = body.logprobs, (body.top_logprobs or 0) if body.logprobs else 0
        else:
            assert isinstance(body, CompletionRequest)
            text = body.prompt
            prompt = await off_loop(len(text), lambda: engine.text_prompt(text))
            max_tokens = engine.resolve_max_tokens(len(prompt), body.max_tokens)
            want, top = body.logprobs is not None, body.logprobs or 0
            if body.echo:
                echo = body.prompt if isinstance(body.prompt, str) else engine.detokenize(prompt)
        if call.force_top_logprobs is not None:
            want, top = True, max(top, call.force_top_logprobs)
        gen = GenerationRequest(
            prompt_tokens=prompt,
            max_tokens=max_tokens,
            sampling=SamplingParams(
                temperature=body.temperature,
                top_p=body.top_p,
                top_k=body.top_k,
                min_p=body.min_p,
                seed=body.seed if body.seed is not None else engine.config.seed,
                logit_bias=body.logit_bias_pairs(),
            ),
            stop=body.stop_sequences(),
            logprobs=want,
            top_logprobs=top,
            ignore_eos=body.ignore_eos,
        )
        return engine.submit(gen), echo  # a full queue raises OverloadedError (429) here

    def first_event_timeout(self, call: Call) -> float | None:
        return None

    async def check_health(self) -> bool:
        return self.pool.state is PoolState.READY

    def context_length(self) -> int | None:
        try:
            return self.pool.get(self.model).info.n_ctx
        except Exception:
            return None

    def count_tokens(self, messages: list[dict[str, Any]]) -> int:
        return self.pool.get(self.model).count_chat_tokens(messages)
