"""`load`: the edge replica with the least estimated completion time; the cloud only when every
edge replica is saturated (device-aware offloading)."""

from __future__ import annotations

import time
from typing import Literal

from pydantic import Field

from edgellm.config import PolicyConfig, Tier
from edgellm.gateway.backends.base import Backend
from edgellm.gateway.policies.base import PolicyContext, register
from edgellm.gateway.request import GatewayRequest
from edgellm.gateway.route import Candidate, Route, StartedAnswer


class LoadPolicyConfig(PolicyConfig):
    kind: Literal["load"] = "load"
    spill_tier: Tier = Field("cloud", description="used only when every edge replica is saturated")


@register("load", LoadPolicyConfig)
class LoadPolicy:
    def __init__(self, config: LoadPolicyConfig, context: PolicyContext) -> None:
        self.config = config
        self.context = context

    async def route(self, call: GatewayRequest, info: Route) -> StartedAnswer:
        models = self.context.candidates(self.config.models)
        prompt = call.estimated_prompt_tokens()
        max_tokens = call.max_tokens or 256
        now = time.monotonic()
        ranked: list[tuple[float, Candidate, Backend]] = []
        cached: dict[str, int] = {}
        for m in models:
            cached |= m.expected_cached(call)  # a cached prefix is not prefilled again
            for r in m.replicas:
                if r.state.available(now):
                    to_prefill = max(1, prompt - cached.get(r.id, 0))
                    ranked.append((r.state.estimate_s(to_prefill, max_tokens), m, r))
        ranked.sort(key=lambda x: x[0])
        edge = [x for x in ranked if x[1].tier != self.config.spill_tier]
        free_edge = [x for x in edge if not x[2].state.saturated]
        spill = [x for x in ranked if x[1].tier == self.config.spill_tier]
        if call.private:
            spill = []
        order = free_edge + spill + [x for x in edge if x[2].state.saturated]
        info.scores = {x[2].id: round(x[0], 4) for x in ranked}
        info.signals |= {
            "prompt_tokens_est": prompt,
            "edge_saturated": bool(edge) and not free_edge,
            "outstanding": {x[2].id: x[2].state.outstanding for x in ranked},
        }
        if cached:
            info.signals["expected_cached_tokens"] = cached
        # one single-replica view per choice, so execute() keeps this exact order
        views = [
            Candidate(m.name, m.tier, m.cost_per_1k_tokens, m.context_length, [r])
            for _, m, r in order
        ]
        if not views:  # every circuit open: let execute() try them all anyway
            views = models
        return await self.context.execute(call, views, info)
