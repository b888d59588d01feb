"""One client request as the gateway sees it: the wire body plus what routing needs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgellm.wire.encode import new_id
from edgellm.wire.schemas import ChatCompletionRequest, CompletionRequest


@dataclass(slots=True)
class GatewayRequest:
    body: ChatCompletionRequest | CompletionRequest
    messages: list[dict[str, Any]] | None = None  # chat: after conversation history is merged
    private: bool = False  # never leaves the edge (header or PII rule)
    force_top_logprobs: int | None = None  # the cascade asks for log-probs the client did not
    needs_stream: bool = False  # the policy reads tokens as they arrive (cascade)
    headers: dict[str, str] = field(default_factory=dict)
    history: list[dict[str, Any]] | None = None  # a conversation's whole history, before trimming
    answer_id: str = ""  # the answer's `id`, known before routing so policies can file by it

    def __post_init__(self) -> None:
        if not self.answer_id:
            self.answer_id = new_id("chatcmpl" if self.is_chat else "cmpl")

    @classmethod
    def of(
        cls, body: ChatCompletionRequest | CompletionRequest, headers: dict[str, str]
    ) -> GatewayRequest:
        messages = None
        if isinstance(body, ChatCompletionRequest):
            messages = [m.model_dump(exclude_none=True) for m in body.messages]
        return cls(body=body, messages=messages, headers=headers)

    @property
    def is_chat(self) -> bool:
        return isinstance(self.body, ChatCompletionRequest)

    @property
    def wants_stream(self) -> bool:
        """Whether an upstream must stream this request: the client streams, or the policy
        reads its tokens as they arrive."""
        return self.body.stream or self.needs_stream

    @property
    def echoes_prompt(self) -> bool:
        """A text completion with `echo`: its answer carries the prompt (and, with `logprobs`,
        the prompt's log-probs under the model that answers)."""
        return isinstance(self.body, CompletionRequest) and self.body.echo

    @property
    def max_tokens(self) -> int | None:
        return self.body.token_cap()

    def text(self) -> str:
        """The prompt's text, for policies (token-id prompts have none)."""
        if self.messages is not None:
            return "\n".join(_content_text(m.get("content")) for m in self.messages)
        prompt = self.body.prompt if isinstance(self.body, CompletionRequest) else ""
        return prompt if isinstance(prompt, str) else ""

    def user_text(self) -> str:
        if self.messages is None:
            return self.text()
        users = [m for m in self.messages if m.get("role") == "user"]
        return _content_text(users[-1].get("content")) if users else ""

    def estimated_prompt_tokens(self) -> int:
        b = self.body
        if isinstance(b, CompletionRequest) and isinstance(b.prompt, list):
            return len(b.prompt)
        return max(1, len(self.text()) // 4)  # about 4 characters per token for English BPE


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""
