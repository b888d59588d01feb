"""`learned`: a classifier predicts whether the small model suffices (RouteLLM-style).

Features cheap enough for a Raspberry Pi: hashed word uni/bi-grams and the prompt length, and
optionally the prompt's embedding by a local GGUF model (`router train --embed-model`; computed
off the event loop). The model is trained by `edgellm router train` (see `gateway/training.py`),
its threshold calibrated for a target escalation rate.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Literal

from pydantic import Field

from edgellm.config import PolicyConfig
from edgellm.gateway.policies.base import PolicyContext, fallback_order, register
from edgellm.gateway.request import GatewayRequest
from edgellm.gateway.route import Route, StartedAnswer
from edgellm.gateway.training import PromptClassifier


class LearnedPolicyConfig(PolicyConfig):
    kind: Literal["learned"] = "learned"
    path: Path = Field(description="classifier trained by `edgellm router train`")
    threshold: float | None = Field(None, description="override the calibrated threshold")
    embedding_threads: int = Field(
        2, ge=1, description="CPU threads of the classifier's embedding model, if it has one"
    )


@register("learned", LearnedPolicyConfig)
class LearnedPolicy:
    def __init__(self, config: LearnedPolicyConfig, context: PolicyContext) -> None:
        self.config = config
        self.context = context
        self.classifier = PromptClassifier.load(config.path, threads=config.embedding_threads)
        self.threshold = (
            config.threshold if config.threshold is not None else self.classifier.threshold
        )

    async def route(self, call: GatewayRequest, info: Route) -> StartedAnswer:
        models = self.context.candidates(self.config.models)
        if call.private:
            models = [m for m in models if m.is_edge]
        if self.classifier.embedder is None:
            p_small = self.classifier.p_small_ok(call.text())
        else:  # a forward pass of the embedding model: not on the event loop
            t0 = time.perf_counter()
            p_small = await asyncio.to_thread(self.classifier.p_small_ok, call.text())
            info.signals["embedding_ms"] = round((time.perf_counter() - t0) * 1e3, 2)
        info.scores["p_small_ok"] = round(p_small, 4)
        info.threshold = self.threshold
        first = models[0] if p_small >= self.threshold or len(models) == 1 else models[1]
        info.signals["escalate"] = first is not models[0]
        return await self.context.execute(call, fallback_order(models, first), info)
