"""`cascade` (hierarchical inference): answer with the smallest tier, score the answer's
confidence from its token log-probs, escalate to the next tier below the threshold.

With `early_abort_tokens: N` the decision comes after the first N tokens, so a doomed small answer
is stopped early. Tokens are held back until the decision: streaming clients only ever see the
tier that is kept.

An escalation improves an answer; it is never a condition for one. The answer being escalated
from stays open (its tokens held back, its generation going on) until a higher tier produces a
first token. If none does (every higher tier fails before its first token, is down, or misses
the escalation deadline), that lower answer is served, marked `degraded` in the route. A tier
whose replicas are all down is skipped without being tried.

A text completion with `echo` is never escalated: its log-probs score the prompt under the model
that answers (lm-eval's log-likelihood requests), and a confidence judged on its one or no
generated token says nothing about that. It goes to the first tier that answers (a tier that is
down or fails is still skipped), with the route's `signals.echo` saying so.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from edgellm.config import (
    MAX_ESCALATION_DEADLINE_S,
    OnlineThresholdConfig,
    PolicyConfig,
    ScorerConfig,
)
from edgellm.engine.types import Failed, Finished, GenerationEvent, TextDelta, TokenLogprob
from edgellm.errors import EdgeLLMError
from edgellm.gateway.confidence import confidence, make_scorer
from edgellm.gateway.errors import outcome_of
from edgellm.gateway.policies.base import PolicyContext, register
from edgellm.gateway.request import GatewayRequest
from edgellm.gateway.route import Candidate, Route, StartedAnswer, down_error
from edgellm.gateway.thresholds import OnlineThreshold


class CascadePolicyConfig(PolicyConfig):
    kind: Literal["cascade"] = "cascade"
    scorer: ScorerConfig = Field(default_factory=ScorerConfig)
    threshold: float = Field(
        -1.0, description="escalate when the score is below it (with `online`: the start value)"
    )
    online: OnlineThresholdConfig | None = Field(
        None, description="adapt the threshold online (None: `threshold` is fixed)"
    )
    early_abort_tokens: int | None = Field(
        None, ge=1, description="decide after this many tokens instead of the whole answer"
    )
    top_logprobs: int = Field(5, ge=0, le=20, description="alternatives for the entropy")
    escalation_deadline_s: float | None = Field(
        None,
        gt=0,
        le=MAX_ESCALATION_DEADLINE_S,
        description="the longest wait for a higher tier's first token before the lower tier's "
        "answer is served (None: the higher tier's own timeouts); requests may override it",
    )


@dataclass(slots=True)
class _Held:
    """An answer the policy wanted to improve on, kept to serve if no higher tier answers."""

    routed: StartedAnswer
    buffered: list[GenerationEvent]  # its events read so far, to be replayed if served
    since: float  # monotonic time of the decision to escalate from it


class _DeadlineMissed(Exception):
    """The higher tier gave no first token within the escalation deadline."""


@register("cascade", CascadePolicyConfig)
class CascadePolicy:
    def __init__(self, config: CascadePolicyConfig, context: PolicyContext) -> None:
        self.config = config
        self.context = context
        self.scorer = make_scorer(config.scorer)
        self.online = (
            None if config.online is None else OnlineThreshold(config.online, config.threshold)
        )
        self._abandoned: set[asyncio.Task[StartedAnswer]] = set()  # attempts that missed a deadline

    def threshold(self) -> float:
        """The score below which an answer escalates; read once per request, here only."""
        return self.config.threshold if self.online is None else self.online.threshold()

    def deadline_s(self, call: GatewayRequest) -> float | None:
        """The longest wait for a higher tier's first token: the request's, else the policy's."""
        asked = call.body.escalation_deadline_s
        return asked if asked is not None else self.config.escalation_deadline_s

    async def route(self, call: GatewayRequest, info: Route) -> StartedAnswer:
        tiers = self.context.candidates(self.config.models)
        if call.private:
            tiers = [m for m in tiers if m.is_edge]
        threshold = self.threshold()
        deadline_s = self.deadline_s(call)
        info.threshold = threshold
        scoring = call.echoes_prompt  # one model's scores of the prompt: not escalated
        if scoring:
            info.signals["echo"] = "not escalated"
        # tokens are scored as they arrive, the small answer cut early
        call.needs_stream = not scoring
        info.signals["scorer"] = self.config.scorer.kind
        info.signals["early_abort_tokens"] = self.config.early_abort_tokens
        if deadline_s is not None:
            info.signals["escalation_deadline_s"] = deadline_s
        policy = info.policy or ""
        held: _Held | None = None
        failure: EdgeLLMError | None = None
        leaving: dict[str, Any] | None = None  # why the tier below is left: its score or failure
        try:
            for i, model in enumerate(tiers):
                last = i == len(tiers) - 1
                step = None if leaving is None else leaving | {"to": model.name}
                if step is not None:
                    info.escalations.append(step)
                    self.context.metrics.count_escalation(policy, step["from"], model.name)
                if not model.reachable():  # open circuits, failing health checks: not tried
                    failure = down_error([model])
                    _record(step, "down", failure.message)
                    if held is None:
                        leaving = {"from": model.name, "cause": "down"}
                    continue
                call.force_top_logprobs = None if last or scoring else self.config.top_logprobs
                deadline = None
                if held is not None and deadline_s is not None:
                    deadline = held.since + deadline_s
                try:
                    routed = await self._start(call, model, info, deadline)
                except _DeadlineMissed:
                    _record(step, "deadline", f"no first token within {deadline_s} s")
                    break  # the held answer is served now: the deadline bars waiting any longer
                except EdgeLLMError as exc:
                    failure = exc
                    _record(step, outcome_of(exc), exc.message[:200])
                    if held is None:
                        leaving = {"from": model.name, "cause": outcome_of(exc)}
                    continue
                _record(step, "answered")
                if held is not None:  # a higher tier has answered: the lower answer goes
                    held.routed.stream.cancel()
                    held = None
                if last or scoring:
                    return self._keep(routed, [])
                try:
                    buffered, logprobs, ended = await self._probe(routed)
                except BaseException:
                    routed.stream.cancel()
                    raise
                conf = confidence(logprobs)
                if conf is None:  # the backend gave no log-probs: nothing to judge, keep it
                    info.scores[model.name] = None
                    return self._keep(routed, buffered)
                score = self.scorer.score(conf)
                if self.online is not None:
                    self.online.decided(call.answer_id, score, threshold, info.escalations)
                info.scores[model.name] = {
                    "score": round(score, 4),
                    "mean_logprob": round(conf.mean_logprob, 4),
                    "min_logprob": round(conf.min_logprob, 4),
                    "mean_entropy": round(conf.mean_entropy, 4),
                    "n_tokens": conf.n_tokens,
                    "complete": ended,
                }
                if score >= threshold:
                    return self._keep(routed, buffered)
                held = _Held(routed, buffered, time.monotonic())
                leaving = {"from": model.name, "cause": "low_confidence", "score": round(score, 4)}
            if held is None:
                raise failure or EdgeLLMError("cascade has no models")
            served, held = self._keep(held.routed, held.buffered), None
            info.degraded = True
            reason = info.escalations[-1].get("outcome", "error")
            self.context.metrics.count_degraded(policy, served.model.name, reason)
            return served
        finally:
            if held is not None:  # the client left, or the policy failed: stop the held answer
                held.routed.stream.cancel()

    async def _start(
        self, call: GatewayRequest, model: Candidate, info: Route, deadline: float | None
    ) -> StartedAnswer:
        """Start `model`; with a deadline (monotonic time), give up on it once that passes."""
        if deadline is None:
            return await self.context.execute(call, [model], info, fallback=False)
        if deadline <= time.monotonic():
            raise _DeadlineMissed
        # The attempt records into its own Route: one that misses the deadline may still
        # finish after the request has been answered.
        own = Route(policy=info.policy, started=info.started)
        task = asyncio.create_task(self.context.execute(call, [model], own, fallback=False))
        try:
            await asyncio.wait({task}, timeout=deadline - time.monotonic())
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task.done():
            info.merge(own)
            routed = task.result()
            routed.info = info
            return routed
        self._abandon(task, model)
        raise _DeadlineMissed

    def _abandon(self, task: asyncio.Task[StartedAnswer], model: Candidate) -> None:
        """A remote attempt that missed the deadline runs on to its first token (then stops) or
        to its own failure, so that a partitioned replica still fails and opens its circuit:
        cancelled at the deadline, it would never fail, and every request would wait out the
        deadline. An in-process attempt has no network to fail, only work to waste: cancelled."""
        if all(r.kind == "engine" for r in model.replicas):
            task.cancel()
        self._abandoned.add(task)
        task.add_done_callback(self._drop)

    def _drop(self, task: asyncio.Task[StartedAnswer]) -> None:
        self._abandoned.discard(task)
        if task.cancelled():
            return
        if task.exception() is None:  # it answered after all: nobody is waiting for it
            task.result().stream.cancel()

    async def _probe(
        self, routed: StartedAnswer
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

    def _keep(self, routed: StartedAnswer, buffered: list[GenerationEvent]) -> StartedAnswer:
        routed.stream.push_back(buffered)
        routed.info.model, routed.info.tier = routed.model.name, routed.model.tier
        routed.info.replica = routed.replica.id
        return routed


def _record(step: dict[str, Any] | None, outcome: str, reason: str | None = None) -> None:
    """What became of an escalation: `answered`, `down` (skipped), `deadline`, or how the
    higher tier failed (`error`, `timeout`, `overloaded`, `rejected`, `not_ready`)."""
    if step is not None:
        step["outcome"] = outcome
        if reason is not None:
            step["reason"] = reason
