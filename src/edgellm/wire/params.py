"""An OpenAI request's fields as engine parameters (what vLLM's `to_sampling_params` does)."""

from __future__ import annotations

from edgellm.engine.types import GenerationRequest, SamplingParams
from edgellm.wire import tools
from edgellm.wire.schemas import ChatCompletionRequest, CompletionRequest
from edgellm.wire.tools import ToolPlan


def wanted_logprobs(body: ChatCompletionRequest | CompletionRequest) -> tuple[bool, int]:
    """Whether the request asks for log-probs, and how many alternatives per token."""
    if isinstance(body, ChatCompletionRequest):
        return body.logprobs, (body.top_logprobs or 0) if body.logprobs else 0
    return body.logprobs is not None, body.logprobs or 0


def generation_request(
    body: ChatCompletionRequest | CompletionRequest,
    prompt_tokens: list[int],
    *,
    max_tokens: int,
    default_seed: int | None,
    min_top_logprobs: int | None = None,
    tool_plan: ToolPlan | None = None,
) -> GenerationRequest:
    """The engine's request for `body` with its prompt tokenized and `max_tokens` resolved
    against the context window. `min_top_logprobs`: log-probs with at least that many
    alternatives even if the client asked for none (a cascade reads them)."""
    want, top = wanted_logprobs(body)
    if min_top_logprobs is not None:
        want, top = True, max(top, min_top_logprobs)
    return GenerationRequest(
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        sampling=SamplingParams(
            temperature=body.temperature,
            top_p=body.top_p,
            top_k=body.top_k,
            min_p=body.min_p,
            seed=body.seed if body.seed is not None else default_seed,
            logit_bias=body.logit_bias_pairs(),
            grammar=tools.grammar(tool_plan) if tool_plan else body.structured_grammar(),
            penalties=body.penalties(),
        ),
        stop=body.stop_sequences(),
        logprobs=want,
        top_logprobs=top,
        ignore_eos=body.ignore_eos,
        eog_logprob=isinstance(body, CompletionRequest) and body.logprobs is not None,
    )
