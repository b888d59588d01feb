"""`cascade` (hierarchical inference): answer with the smallest tier, score the answer's
confidence from its token log-probs, escalate to the next tier below the threshold.

With `early_abort_tokens: N` the decision comes after the first N tokens, so a doomed small answer
is stopped early. Tokens are held back until the decision: streaming clients only ever see the
tier that is kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgellm.config import CascadePolicyConfig
from edgellm.engine.types import Failed, Finished, GenerationEvent, TextDelta, TokenLogprob
from edgellm.errors import EdgeLLMError
from edgellm.gateway.call import Call
from edgellm.gateway.policies.base import register
from edgellm.gateway.route import RouteInfo
from edgellm.gateway.scorers import confidence, make_scorer

if TYPE_CHECKING:
    from edgellm.gateway.router import Routed, Router


@register("cascade")
class CascadePolicy:
    def __init__(self, config: CascadePolicyConfig, router: Router) -> None:
        self.config = config
        self.router = router
        self.scorer = make_scorer(config.scorer)

    async def route(self, call: Call, info: RouteInfo) -> Routed:
        tiers = self.router.by_tier(self.config.models or None)
        if call.private:
            tiers = [m for m in tiers if m.is_edge]
        info.threshold = self.config.threshold
        call.needs_stream = True  # tokens are scored as they arrive, the small answer cut early
        info.signals["scorer"] = self.config.scorer.kind
        info.signals["early_abort_tokens"] = self.config.early_abort_tokens
        for i, model in enumerate(tiers):
            last = i == len(tiers) - 1
            if last:
                call.force_top_logprobs = None
                return await self.router.execute(call, [model], info, fallback=False)
            call.force_top_logprobs = self.config.top_logprobs
            try:
                routed = await self.router.execute(call, [model], info, fallback=False)
            except EdgeLLMError as exc:
                info.escalations.append(
                    {"from": model.name, "to": tiers[i + 1].name, "reason": exc.message[:200]}
                )
                continue
            buffered, logprobs, ended = await self._probe(routed)
            conf = confidence(logprobs)
            if conf is None:  # the backend gave no log-probs: nothing to judge, keep it
                info.scores[model.name] = None
                return self._keep(routed, buffered)
            score = self.scorer.score(conf)
            info.scores[model.name] = {
                "score": round(score, 4),
                "mean_logprob": round(conf.mean_logprob, 4),
                "min_logprob": round(conf.min_logprob, 4),
                "mean_entropy": round(conf.mean_entropy, 4),
                "n_tokens": conf.n_tokens,
                "complete": ended,
            }
            if score >= self.config.threshold:
                return self._keep(routed, buffered)
            routed.stream.cancel()
            target = tiers[i + 1].name
            info.escalations.append({"from": model.name, "to": target, "score": round(score, 4)})
            self.router.metrics.escalations.labels(info.policy or "", model.name, target).inc()
        raise EdgeLLMError("cascade has no models")  # pragma: no cover - config has at least one

    async def _probe(
        self, routed: Routed
    ) -> tuple[list[GenerationEvent], list[TokenLogprob], bool]:
        """Read events until the decision point: N tokens, or the end of the answer."""
        limit = self.config.early_abort_tokens
        buffered: list[GenerationEvent] = []
        logprobs: list[TokenLogprob] = []
        while True:
            event = await routed.stream.next()
            if event is None:
                return buffered, logprobs, True
            buffered.append(event)
            if isinstance(event, TextDelta):
                logprobs.extend(event.logprobs)
                if limit is not None and len(logprobs) >= limit:
                    return buffered, logprobs[:limit], False
            elif isinstance(event, Finished | Failed):
                return buffered, logprobs, True

    def _keep(self, routed: Routed, buffered: list[GenerationEvent]) -> Routed:
        routed.stream.push_back(buffered)
        routed.info.model, routed.info.tier = routed.model.name, routed.model.tier
        routed.info.replica = routed.replica.id
        return routed
