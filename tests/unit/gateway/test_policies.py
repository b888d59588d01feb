"""Each routing policy's choice, against a fake `PolicyContext`: the models it hands to
`execute`, in which order, and what it records in the route. Every choice is paired with the
input that flips it. No router, backend or network: the context answers from a script."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import ValidationError

from edgellm.config import POLICY_CONFIGS, TIERS, EdgeLLMConfig, PolicyConfig, Tier
from edgellm.engine.types import (
    Finished,
    FinishReason,
    GenerationEvent,
    TextDelta,
    Timings,
    TokenLogprob,
)
from edgellm.errors import EdgeLLMError
from edgellm.gateway.errors import NoBackendError, UpstreamError
from edgellm.gateway.health import ReplicaState
from edgellm.gateway.policies import learned as learned_module
from edgellm.gateway.policies.base import POLICY_KINDS, Policy, PolicyContext, register
from edgellm.gateway.policies.cascade import CascadePolicy, CascadePolicyConfig
from edgellm.gateway.policies.learned import LearnedPolicy, LearnedPolicyConfig
from edgellm.gateway.policies.load import LoadPolicy, LoadPolicyConfig
from edgellm.gateway.policies.rules import RulesPolicy, RulesPolicyConfig
from edgellm.gateway.request import GatewayRequest
from edgellm.gateway.route import Candidate, Route, StartedAnswer
from edgellm.gateway.router import Router
from edgellm.gateway.streams import ReplayStream
from edgellm.wire.echo import Echo
from edgellm.wire.schemas import ChatCompletionRequest, CompletionRequest

# -- the fake context ---------------------------------------------------------------------------


@dataclass
class Replica:
    id: str
    kind: str = "http"
    state: ReplicaState = field(default_factory=ReplicaState)


class Upstream:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    async def __aiter__(self) -> AsyncIterator[GenerationEvent]:
        return
        yield  # an async generator that yields nothing


@dataclass
class Reply:
    """How a model answers when the context executes it: `tokens` at `logprob` each (None: no
    log-probs), after `delay_s`; or `error` before the first token."""

    tokens: int = 3
    logprob: float | None = -0.1
    delay_s: float = 0.0
    error: EdgeLLMError | None = None


class Metrics:
    def __init__(self) -> None:
        self.escalations: list[tuple[str, str, str]] = []
        self.degraded: list[tuple[str, str, str]] = []

    def count_escalation(self, policy: str, source: str, target: str) -> None:
        self.escalations.append((policy, source, target))

    def count_degraded(self, policy: str, model: str, reason: str) -> None:
        self.degraded.append((policy, model, reason))


class Context:
    """A `PolicyContext`: candidates smallest tier first; `execute` records each choice and
    answers as the first model's `Reply` says."""

    def __init__(self, *tiers: tuple[str, Tier]) -> None:
        self.models = {
            name: Candidate(name, tier, 0.0, None, [Replica(f"{name}-0")]) for name, tier in tiers
        }
        self.replies = {name: Reply() for name in self.models}
        self.metrics = Metrics()
        self.executed: list[list[str]] = []
        self.private: list[bool] = []
        self.fallback: list[bool] = []
        self.upstreams: dict[str, list[Upstream]] = {name: [] for name in self.models}

    def candidates(self, names: Sequence[str] = ()) -> list[Candidate]:
        chosen = [self.models[n] for n in names] if names else list(self.models.values())
        return sorted(chosen, key=lambda m: TIERS.index(m.tier))

    async def execute(
        self, call: GatewayRequest, models: list[Candidate], info: Route, *, fallback: bool = True
    ) -> StartedAnswer:
        self.executed.append([m.name for m in models])
        self.private.append(call.private)
        self.fallback.append(fallback)
        model = models[0]
        reply = self.replies[model.name]
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        if reply.error is not None:
            raise reply.error
        events: list[GenerationEvent] = []
        for i in range(reply.tokens):
            lps = () if reply.logprob is None else (_lp(f"{model.name}{i} ", reply.logprob),)
            events.append(TextDelta(f"{model.name}{i} ", (), lps))
        events.append(Finished(FinishReason.STOP, 1, reply.tokens, Timings()))
        upstream = Upstream()
        self.upstreams[model.name].append(upstream)
        stream = ReplayStream(events, None, upstream)
        info.hop(model.name, model.replicas[0].id, "ok", info.started)
        return StartedAnswer(stream, model, model.replicas[0], Echo(), info)

    def down(self, name: str) -> None:
        self.models[name].replicas[0].state.record_health(False)


def _lp(token: str, logprob: float) -> TokenLogprob:
    return TokenLogprob(token=token, token_id=-1, logprob=logprob, bytes=token.encode())


def three_tiers() -> Context:
    return Context(("cloud", "cloud"), ("small", "edge-small"), ("large", "edge-large"))


def call(text: str = "hi", headers: dict[str, str] | None = None, **body: Any) -> GatewayRequest:
    request = ChatCompletionRequest(
        model="auto", messages=[{"role": "user", "content": text}], **body
    )
    return GatewayRequest.of(request, headers or {})


def route(policy: Policy, c: GatewayRequest, name: str = "p") -> tuple[StartedAnswer, Route]:
    info = Route(policy=name)
    routed = asyncio.run(policy.route(c, info))
    return routed, info


async def text_of(routed: StartedAnswer) -> str:
    out = ""
    async for event in routed.stream:
        if isinstance(event, TextDelta):
            out += event.text
    return out


def test_every_registered_policy_kind_is_tested_here() -> None:
    assert set(POLICY_KINDS) == {"rules", "learned", "cascade", "load"}


# -- rules --------------------------------------------------------------------------------------


def rules(ctx: Context, **config: Any) -> RulesPolicy:
    return RulesPolicy(RulesPolicyConfig(name="p", **config), ctx)


def test_rules_a_plain_prompt_goes_to_the_smallest_tier_and_falls_back_upwards() -> None:
    ctx = three_tiers()
    _, info = route(rules(ctx), call("What is the capital of France"))
    assert ctx.executed == [["small", "large", "cloud"]]
    assert info.signals["target_tier"] == "edge-small" and info.signals["markers"] == []

    ctx = three_tiers()
    _, info = route(rules(ctx), call("What is 12 * 7"))  # the math marker: edge-large
    assert ctx.executed == [["large", "cloud", "small"]]
    assert info.signals["markers"] == ["math"]


def test_rules_a_long_prompt_goes_to_the_long_prompt_tier_from_its_length_on() -> None:
    ctx = three_tiers()
    route(rules(ctx, long_prompt_chars=40), call("x" * 40))
    route(rules(ctx, long_prompt_chars=40), call("x" * 39))
    assert ctx.executed == [["cloud", "large", "small"], ["small", "large", "cloud"]]


def test_rules_personal_data_keeps_the_request_on_the_edge() -> None:
    ctx = three_tiers()
    _, info = route(rules(ctx, long_prompt_chars=10), call("mail me at ann@example.org please"))
    # the length wanted the cloud; the address pins the request to the largest edge tier
    assert ctx.executed == [["large", "small"]] and ctx.private == [True]
    assert info.signals["pii"] == ["email"] and info.signals["target_tier"] == "edge-large"

    ctx = three_tiers()
    route(rules(ctx, long_prompt_chars=10), call("mail me at the office please"))
    assert ctx.executed == [["cloud", "large", "small"]] and ctx.private == [False]


def test_rules_the_private_header_keeps_the_request_on_the_edge() -> None:
    for value, private in (("true", True), ("no", False)):
        ctx = three_tiers()
        c = call("x" * 3000, headers={"x-edgellm-private": value})
        route(rules(ctx), c)
        assert ctx.private == [private]
        assert ("cloud" in ctx.executed[0]) is not private


def test_rules_choose_only_among_their_models() -> None:
    ctx = three_tiers()
    route(rules(ctx, models=["large", "cloud"]), call("hi"))
    route(rules(ctx), call("hi"))
    assert ctx.executed == [["large", "cloud"], ["small", "large", "cloud"]]


# -- learned ------------------------------------------------------------------------------------


class Classifier:
    """P(small suffices): 0.9 for prompts with "easy", else 0.2."""

    threshold = 0.5
    embedder = None

    def p_small_ok(self, text: str) -> float:
        return 0.9 if "easy" in text else 0.2


def learned(
    ctx: Context, monkeypatch: pytest.MonkeyPatch, threshold: float | None = None
) -> LearnedPolicy:
    monkeypatch.setattr(learned_module.PromptClassifier, "load", lambda *a, **k: Classifier())
    config = LearnedPolicyConfig(name="p", path=Path("unused.json"), threshold=threshold)
    return LearnedPolicy(config, ctx)


def test_learned_sends_what_the_small_model_suffices_for_to_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ctx = three_tiers()
    _, easy = route(learned(ctx, monkeypatch), call("an easy one"))
    _, hard = route(learned(ctx, monkeypatch), call("a proof"))
    assert ctx.executed == [["small", "large", "cloud"], ["large", "cloud", "small"]]
    assert easy.scores == {"p_small_ok": 0.9} and easy.signals["escalate"] is False
    assert hard.scores == {"p_small_ok": 0.2} and hard.signals["escalate"] is True
    assert easy.threshold == 0.5  # the classifier's calibrated threshold


def test_learned_a_configured_threshold_overrides_the_calibrated_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ctx = three_tiers()
    _, info = route(learned(ctx, monkeypatch, threshold=0.95), call("an easy one"))
    assert ctx.executed == [["large", "cloud", "small"]] and info.threshold == 0.95


def test_learned_private_requests_lose_the_cloud(monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = three_tiers()
    c = call("a proof")
    c.private = True
    route(learned(ctx, monkeypatch), c)
    assert ctx.executed == [["large", "small"]]


# -- load ---------------------------------------------------------------------------------------


def edge_pair() -> Context:
    ctx = Context(("a", "edge-small"), ("b", "edge-small"), ("cloud", "cloud"))
    for m in ctx.models.values():
        m.replicas[0].state.max_concurrency = 2
    return ctx


def busy(ctx: Context, name: str, outstanding: int) -> None:
    ctx.models[name].replicas[0].state.outstanding = outstanding


def test_load_the_least_estimated_completion_time_goes_first() -> None:
    ctx = edge_pair()
    busy(ctx, "a", 1)
    _, info = route(LoadPolicy(LoadPolicyConfig(name="p"), ctx), call())
    busy(ctx, "a", 0)
    busy(ctx, "b", 1)
    route(LoadPolicy(LoadPolicyConfig(name="p"), ctx), call())
    assert ctx.executed == [["b", "a", "cloud"], ["a", "b", "cloud"]]
    assert info.scores["b-0"] < info.scores["a-0"] and info.signals["edge_saturated"] is False


def test_load_spills_to_the_cloud_only_when_every_edge_replica_is_saturated() -> None:
    ctx = edge_pair()
    busy(ctx, "a", 2)
    busy(ctx, "b", 1)
    route(LoadPolicy(LoadPolicyConfig(name="p"), ctx), call())
    busy(ctx, "b", 2)
    _, info = route(LoadPolicy(LoadPolicyConfig(name="p"), ctx), call())
    assert ctx.executed == [["b", "cloud", "a"], ["cloud", "a", "b"]]
    assert info.signals["edge_saturated"] is True

    # a private request waits for the edge rather than spill
    c = call()
    c.private = True
    route(LoadPolicy(LoadPolicyConfig(name="p"), ctx), c)
    assert ctx.executed[-1] == ["a", "b"]


def test_load_skips_replicas_that_are_down() -> None:
    ctx = edge_pair()
    ctx.down("a")
    route(LoadPolicy(LoadPolicyConfig(name="p"), ctx), call())
    assert ctx.executed == [["b", "cloud"]]


# -- cascade ------------------------------------------------------------------------------------


def cascade(ctx: Context, **config: Any) -> CascadePolicy:
    return CascadePolicy(CascadePolicyConfig(name="p", **config), ctx)


def test_cascade_keeps_a_confident_answer_and_escalates_an_unsure_one() -> None:
    ctx = three_tiers()
    routed, info = route(cascade(ctx, threshold=-1.0), call())
    assert routed.model.name == "small" and info.escalations == []
    assert asyncio.run(text_of(routed)) == "small0 small1 small2 "
    assert info.scores["small"]["score"] == pytest.approx(-0.1)

    ctx = three_tiers()
    ctx.replies["small"].logprob = -2.0
    routed, info = route(cascade(ctx, threshold=-1.0), call())
    assert routed.model.name == "large" and ctx.executed == [["small"], ["large"]]
    assert [(e["from"], e["to"], e["outcome"]) for e in info.escalations] == [
        ("small", "large", "answered")
    ]
    assert ctx.upstreams["small"][0].cancelled  # the lower answer goes once the higher answers
    assert ctx.metrics.escalations == [("p", "small", "large")]
    assert ctx.fallback == [False, False]  # one model per attempt: the cascade owns the order


def test_cascade_decides_after_early_abort_tokens() -> None:
    ctx = three_tiers()
    ctx.replies["small"].tokens = 6
    routed, info = route(cascade(ctx, early_abort_tokens=2), call())
    assert info.scores["small"]["n_tokens"] == 2 and info.scores["small"]["complete"] is False
    # the judged tokens are replayed: the client sees the whole answer
    assert asyncio.run(text_of(routed)).split() == [f"small{i}" for i in range(6)]

    ctx = three_tiers()
    ctx.replies["small"].tokens = 6
    _, info = route(cascade(ctx), call())
    assert info.scores["small"]["n_tokens"] == 6 and info.scores["small"]["complete"] is True


def test_cascade_asks_for_logprobs_except_from_the_last_tier() -> None:
    ctx = Context(("small", "edge-small"), ("cloud", "cloud"))
    ctx.replies["small"].logprob = -5.0
    seen: list[int | None] = []
    execute = ctx.execute

    async def spy(
        c: GatewayRequest, models: list[Candidate], info: Route, **kw: Any
    ) -> StartedAnswer:
        seen.append(c.force_top_logprobs)
        return await execute(c, models, info, **kw)

    ctx.execute = spy  # type: ignore[method-assign]
    routed, _ = route(cascade(ctx, top_logprobs=3), call())
    assert routed.model.name == "cloud" and seen == [3, None]


def test_cascade_never_escalates_an_echo_but_still_skips_a_failing_tier() -> None:
    def echo_call(echo: bool) -> GatewayRequest:
        body = CompletionRequest(model="auto", prompt="The sky is", echo=echo, logprobs=1)
        return GatewayRequest.of(body, {})

    ctx = three_tiers()
    ctx.replies["small"].logprob = -5.0  # unsure: a plain request escalates
    routed, info = route(cascade(ctx, threshold=-1.0), echo_call(echo=True))
    assert routed.model.name == "small" and ctx.executed == [["small"]]
    assert info.escalations == [] and info.signals["echo"] == "not escalated"
    routed, info = route(cascade(ctx, threshold=-1.0), echo_call(echo=False))
    assert routed.model.name == "large" and "echo" not in info.signals

    ctx = three_tiers()
    ctx.replies["small"].error = UpstreamError("boom")
    ctx.replies["large"].logprob = -5.0
    routed, _ = route(cascade(ctx, threshold=-1.0), echo_call(echo=True))
    assert routed.model.name == "large" and ctx.executed == [["small"], ["large"]]


def test_cascade_keeps_an_answer_without_logprobs() -> None:
    ctx = three_tiers()
    ctx.replies["small"].logprob = None  # a backend that gives none: nothing to judge
    routed, info = route(cascade(ctx, threshold=10.0), call())
    assert routed.model.name == "small" and info.scores == {"small": None}


def test_cascade_serves_the_lower_answer_degraded_when_the_higher_tier_fails() -> None:
    ctx = Context(("small", "edge-small"), ("cloud", "cloud"))
    ctx.replies["small"].logprob = -2.0
    ctx.replies["cloud"].error = UpstreamError("boom", status=503, source="cloud-0")
    routed, info = route(cascade(ctx), call())
    assert routed.model.name == "small" and info.degraded is True
    assert info.escalations[0]["outcome"] == "error" and "boom" in info.escalations[0]["reason"]
    assert not ctx.upstreams["small"][0].cancelled
    assert asyncio.run(text_of(routed)) == "small0 small1 small2 "
    assert ctx.metrics.degraded == [("p", "small", "error")]

    ctx.replies["cloud"].error = None
    routed, info = route(cascade(ctx), call())
    assert routed.model.name == "cloud" and info.degraded is False


def test_cascade_skips_a_tier_that_is_down_without_trying_it() -> None:
    ctx = Context(("small", "edge-small"), ("cloud", "cloud"))
    ctx.replies["small"].logprob = -2.0
    ctx.down("cloud")
    routed, info = route(cascade(ctx), call())
    assert ctx.executed == [["small"]] and routed.model.name == "small"
    assert info.escalations[0]["outcome"] == "down" and info.degraded is True
    assert ctx.metrics.degraded == [("p", "small", "down")]


def test_cascade_a_failing_first_tier_moves_up_and_is_not_degraded() -> None:
    ctx = Context(("small", "edge-small"), ("cloud", "cloud"))
    ctx.replies["small"].error = UpstreamError("refused", source="small-0")
    routed, info = route(cascade(ctx), call())
    assert routed.model.name == "cloud" and info.degraded is False
    assert info.escalations == [
        {"from": "small", "cause": "error", "to": "cloud", "outcome": "answered"}
    ]


def test_cascade_every_tier_failing_raises_the_last_failure() -> None:
    ctx = Context(("small", "edge-small"), ("cloud", "cloud"))
    ctx.down("small")
    ctx.down("cloud")
    with pytest.raises(NoBackendError, match="every replica of cloud is down"):
        route(cascade(ctx), call())
    assert ctx.executed == []


def test_cascade_the_escalation_deadline_serves_the_lower_answer() -> None:
    ctx = Context(("small", "edge-small"), ("cloud", "cloud"))
    ctx.replies["small"].logprob = -2.0
    ctx.replies["cloud"].delay_s = 0.3
    routed, info = route(cascade(ctx, escalation_deadline_s=0.05), call())
    assert routed.model.name == "small" and info.degraded is True
    assert info.escalations[0]["outcome"] == "deadline"
    assert info.signals["escalation_deadline_s"] == 0.05

    # the request's own deadline overrides the policy's
    routed, info = route(cascade(ctx, escalation_deadline_s=0.05), call(escalation_deadline_s=2.0))
    assert routed.model.name == "cloud" and info.degraded is False


def test_cascade_a_missed_deadline_serves_the_held_answer_without_trying_further_tiers() -> None:
    ctx = three_tiers()
    ctx.replies["small"].logprob = -2.0
    ctx.replies["large"].delay_s = 0.3
    routed, info = route(cascade(ctx, escalation_deadline_s=0.05), call())
    assert routed.model.name == "small" and ctx.executed == [["small"], ["large"]]
    assert [e["outcome"] for e in info.escalations] == ["deadline"]

    # a large tier that fails instead moves on to the cloud
    ctx = three_tiers()
    ctx.replies["small"].logprob = -2.0
    ctx.replies["large"].error = UpstreamError("refused", source="large-0")
    routed, info = route(cascade(ctx, escalation_deadline_s=0.05), call())
    assert routed.model.name == "cloud" and ctx.executed == [["small"], ["large"], ["cloud"]]


def test_cascade_private_requests_never_reach_the_cloud() -> None:
    ctx = three_tiers()
    ctx.replies["small"].logprob = ctx.replies["large"].logprob = -2.0
    c = call()
    c.private = True
    routed, info = route(cascade(ctx), c)
    assert ctx.executed == [["small"], ["large"]] and routed.model.name == "large"
    assert info.degraded is False  # the cloud was never a candidate

    ctx = three_tiers()
    ctx.replies["small"].logprob = ctx.replies["large"].logprob = -2.0
    routed, _ = route(cascade(ctx), call())
    assert routed.model.name == "cloud"


# -- the registry: a policy is one file ---------------------------------------------------------


class FirstPolicyConfig(PolicyConfig):
    kind: Literal["first-probe"] = "first-probe"
    pick: str = "small"


def test_a_policy_registered_beside_its_config_is_configured_and_built_with_no_other_edit() -> None:
    class FirstPolicy:
        def __init__(self, config: FirstPolicyConfig, context: PolicyContext) -> None:
            self.config, self.context = config, context

        async def route(self, call: GatewayRequest, info: Route) -> StartedAnswer:
            models = [self.context.candidates([self.config.pick])[0]]
            return await self.context.execute(call, models, info)

    with pytest.raises(TypeError, match="must default to 'other'"):
        register("other", FirstPolicyConfig)
    register("first-probe", FirstPolicyConfig)(FirstPolicy)
    try:
        with pytest.raises(ValueError, match="registered twice"):
            register("first-probe", FirstPolicyConfig)(RulesPolicy)
        remote = [{"name": "small", "tier": "edge-small", "backends": [{"url": "http://s/v1"}]}]
        entry = {"name": "probe", "kind": "first-probe", "pick": "small"}
        config = EdgeLLMConfig.model_validate(
            {"models": [], "remote_models": remote, "policies": [entry]}
        )
        assert isinstance(config.policies[0], FirstPolicyConfig)
        assert isinstance(Router(config, None).policies["probe"], FirstPolicy)
        with pytest.raises(ValidationError, match=r"policies\.0\.pik"):
            EdgeLLMConfig.model_validate({"policies": [entry | {"pik": "small"}]})
    finally:
        del POLICY_KINDS["first-probe"], POLICY_CONFIGS["first-probe"]
    with pytest.raises(ValidationError, match="unknown policy kind 'first-probe'"):
        EdgeLLMConfig.model_validate({"policies": [entry]})
