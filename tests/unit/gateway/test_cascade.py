"""The cascade never loses an answer: a higher tier that fails before its first token, is down
or misses the escalation deadline leaves the lower answer to be served (degraded, and the route
says why). In-memory scripted backends make the timings deterministic."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import generate_latest

from edgellm.config import EdgeLLMConfig
from edgellm.engine.types import (
    Failed,
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
from edgellm.gateway.request import GatewayRequest
from edgellm.gateway.router import Router, StartedAnswer
from edgellm.wire.echo import Echo
from edgellm.wire.schemas import ChatCompletionRequest


class Script:
    """One replica: after `first_delay_s`, its `reply` tokens at `logprob` each, one every
    `token_delay_s`; or `fail` before the first token; or a break after `die_after` tokens."""

    def __init__(self, name: str, reply: list[str], logprob: float, kind: str = "http") -> None:
        self.id = f"script:{name}"
        self.kind = kind
        self.reply = reply
        self.logprob = logprob
        self.state = ReplicaState(failure_threshold=1, cooldown_s=60)
        self.first_token_timeout_s: float | None = None
        self.first_delay_s = 0.0
        self.token_delay_s = 0.0
        self.fail: EdgeLLMError | None = None
        self.die_after: int | None = None
        self.opened = 0
        self.produced = 0  # tokens generated, read or not
        self.cancelled = 0

    async def open(self, call: GatewayRequest) -> tuple[ScriptStream, Echo]:
        self.opened += 1
        if self.first_delay_s:
            await asyncio.sleep(self.first_delay_s)
        if self.fail is not None:
            raise self.fail
        return ScriptStream(self), Echo()

    def first_event_timeout(self, call: GatewayRequest) -> float | None:
        return None

    def lacks(self, needs: frozenset[str]) -> frozenset[str]:
        return frozenset()

    async def check_health(self) -> bool:
        return True

    def context_length(self) -> int | None:
        return None

    def count_tokens(self, messages: list[dict[str, Any]]) -> int:
        return 1


class ScriptStream:
    """Generates into a queue as an engine does, whether or not anyone reads it."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.queue: asyncio.Queue[GenerationEvent] = asyncio.Queue()
        self.stopped = False
        self.task = asyncio.create_task(self._generate())

    async def _generate(self) -> None:
        s = self.script
        for i, text in enumerate(s.reply):
            if i and s.token_delay_s:
                await asyncio.sleep(s.token_delay_s)
            if s.die_after is not None and i >= s.die_after:
                self.queue.put_nowait(Failed(UpstreamError("stream broke", source=s.id)))
                return
            lp = TokenLogprob(token=text, token_id=-1, logprob=s.logprob, bytes=text.encode())
            s.produced += 1
            self.queue.put_nowait(TextDelta(text=text, token_ids=(), logprobs=(lp,)))
        n = len(s.reply)
        done = Finished(FinishReason.STOP, prompt_tokens=1, completion_tokens=n, timings=Timings())
        self.queue.put_nowait(done)

    def cancel(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.script.cancelled += 1
            self.task.cancel()

    async def __aiter__(self) -> AsyncIterator[GenerationEvent]:
        while True:
            event = await self.queue.get()
            yield event
            if isinstance(event, Finished | Failed):
                return


@dataclass
class Tiers:
    small: Script
    large: Script
    cloud: Script

    @property
    def all(self) -> list[Script]:
        return [self.small, self.large, self.cloud]


def make_router(**policy: Any) -> tuple[Router, Tiers]:
    config = EdgeLLMConfig.model_validate(
        {
            "models": [],
            "remote_models": [
                {"name": n, "tier": t, "backends": [{"url": f"http://{n}.invalid/v1"}]}
                for n, t in (("small", "edge-small"), ("large", "edge-large"), ("cloud", "cloud"))
            ],
            "policies": [
                {"name": "cascade", "kind": "cascade", "threshold": -1.0, "early_abort_tokens": 2}
                | policy
            ],
            "router": {"retries": 0},  # one attempt per tier: each failure is one outcome
        }
    )
    router = Router(config, None)
    small = Script("small", ["s1", " s2", " s3", " s4", " s5"], logprob=-3.0)  # unsure
    large = Script("large", ["l1", " l2", " l3"], logprob=-2.0)  # unsure
    cloud = Script("cloud", ["c1", " c2"], logprob=-0.1)
    for script in (small, large, cloud):
        router.models[script.id.removeprefix("script:")].replicas = [script]
    return router, Tiers(small, large, cloud)


def call(**extra: Any) -> GatewayRequest:
    body = ChatCompletionRequest(
        model="cascade", messages=[{"role": "user", "content": "hi"}], **extra
    )
    return GatewayRequest.of(body, {})


async def answer(routed: StartedAnswer) -> tuple[str, GenerationEvent | None]:
    text, last = "", None
    async for event in routed.stream:
        if isinstance(event, TextDelta):
            text += event.text
        last = event
    return text, last


def route_dict(routed: StartedAnswer) -> dict[str, Any]:
    return routed.info.as_dict()


def test_a_failing_top_tier_leaves_the_best_lower_answer_served_whole() -> None:
    async def run() -> None:
        router, t = make_router()
        t.cloud.fail = UpstreamError("cannot reach the upstream (ConnectError)", source=t.cloud.id)
        routed = await router.route(call())
        text, last = await answer(routed)
        # the large answer (the highest that answered), resumed past the 2 tokens it was judged
        # on, whole and alone: the small answer went when the large one answered
        assert text == "l1 l2 l3" and isinstance(last, Finished)
        route = route_dict(routed)
        assert route["model"] == "large" and route["degraded"] is True
        assert [(e["from"], e["to"], e["outcome"]) for e in route["escalations"]] == [
            ("small", "large", "answered"),
            ("large", "cloud", "error"),
        ]
        assert route["escalations"][1]["cause"] == "low_confidence"
        assert "ConnectError" in route["escalations"][1]["reason"]
        assert t.small.cancelled == 1 and t.large.cancelled == 0
        assert "degraded=true" in routed.info.header()

    asyncio.run(run())


def test_a_top_tier_that_answers_is_served_and_not_degraded() -> None:
    async def run() -> None:
        router, t = make_router()
        routed = await router.route(call())
        assert (await answer(routed))[0] == "c1 c2"
        route = route_dict(routed)
        assert route["model"] == "cloud" and route["degraded"] is False
        assert [e["outcome"] for e in route["escalations"]] == ["answered", "answered"]
        assert "degraded" not in routed.info.header()
        assert (
            t.small.cancelled == 1 and t.large.cancelled == 1
        )  # both went at the next first token

    asyncio.run(run())


def test_a_tier_that_is_down_is_skipped_without_a_try() -> None:
    async def run() -> None:
        router, t = make_router(models=["small", "cloud"])
        t.cloud.state.record_failure("refused")  # threshold 1: the circuit is open
        t.cloud.first_delay_s = 5.0  # what a try would cost
        t0 = time.perf_counter()
        routed = await router.route(call())
        assert time.perf_counter() - t0 < 0.5
        assert (await answer(routed))[0] == "s1 s2 s3 s4 s5"
        route = route_dict(routed)
        assert t.cloud.opened == 0 and route["degraded"] is True
        assert route["escalations"][0]["outcome"] == "down"
        assert route["escalations"][0]["reason"] == "every replica of cloud is down"
        assert [h["model"] for h in route["hops"]] == ["small"]

        # failing health checks count as down too; a healthy, closed circuit is tried
        t.cloud.state = ReplicaState()
        t.cloud.state.record_health(False)
        routed = await router.route(call())
        assert route_dict(routed)["escalations"][0]["outcome"] == "down" and t.cloud.opened == 0
        routed.stream.cancel()
        t.cloud.state.record_health(True)
        t.cloud.first_delay_s = 0.0
        routed = await router.route(call())
        assert route_dict(routed)["model"] == "cloud" and t.cloud.opened == 1
        routed.stream.cancel()

    asyncio.run(run())


def test_every_tier_down_fails_at_once_naming_no_address() -> None:
    async def run() -> None:
        router, t = make_router()
        scripts = t.all
        for script in scripts:
            script.state.record_failure("cannot connect to 10.0.0.9:9000")
        with pytest.raises(NoBackendError) as err:
            await router.route(call())
        assert err.value.status_code == 503
        assert "every replica of cloud is down" in err.value.message
        assert all(s.opened == 0 for s in scripts)

        router, t = make_router()
        scripts = t.all
        for script in scripts:
            script.fail = UpstreamError("cannot reach", source="http://10.0.0.9:9000/v1")
        with pytest.raises(UpstreamError) as failed:
            await router.route(call())
        assert "10.0.0.9" not in failed.value.message and "10.0.0.9" in failed.value.detail

    asyncio.run(run())


def test_the_escalation_deadline_serves_the_lower_answer() -> None:
    async def run() -> None:
        router, t = make_router(models=["small", "cloud"])
        t.cloud.first_delay_s = 0.6
        t0 = time.perf_counter()
        routed = await router.route(call(escalation_deadline_s=0.1))
        assert time.perf_counter() - t0 < 0.4
        assert (await answer(routed))[0] == "s1 s2 s3 s4 s5"
        route = route_dict(routed)
        assert route["degraded"] is True and route["escalations"][0]["outcome"] == "deadline"
        assert route["signals"]["escalation_deadline_s"] == 0.1

        # a longer deadline (the request's) waits for the cloud's first token
        routed = await router.route(call(escalation_deadline_s=2.0))
        assert (await answer(routed))[0] == "c1 c2"
        route = route_dict(routed)
        assert route["degraded"] is False and route["escalations"][0]["outcome"] == "answered"
        assert [h["model"] for h in route["hops"]] == ["small", "cloud"]

    asyncio.run(run())


def test_the_policy_deadline_applies_unless_the_request_sets_one() -> None:
    async def run() -> None:
        router, t = make_router(models=["small", "cloud"], escalation_deadline_s=0.1)
        t.cloud.first_delay_s = 0.4
        routed = await router.route(call())
        assert route_dict(routed)["model"] == "small"
        routed.stream.cancel()
        routed = await router.route(call(escalation_deadline_s=3.0))
        assert route_dict(routed)["model"] == "cloud"
        routed.stream.cancel()

    asyncio.run(run())


def test_a_remote_attempt_past_the_deadline_runs_on_to_fail_and_open_its_circuit() -> None:
    async def run() -> None:
        router, t = make_router(models=["small", "cloud"])
        t.cloud.first_delay_s = 0.3
        t.cloud.fail = UpstreamError("connect timed out", status=504, source=t.cloud.id)
        routed = await router.route(call(escalation_deadline_s=0.05))
        routed.stream.cancel()
        assert t.cloud.state.available()  # the attempt is still connecting
        await asyncio.sleep(0.5)
        assert not t.cloud.state.available()  # it failed: the circuit opened
        routed = await router.route(call(escalation_deadline_s=0.05))
        assert route_dict(routed)["escalations"][0]["outcome"] == "down" and t.cloud.opened == 1
        routed.stream.cancel()

        # one that answers after all is stopped at its first token
        t.cloud.state, t.cloud.fail = ReplicaState(), None
        t.cloud.token_delay_s = 0.05
        routed = await router.route(call(escalation_deadline_s=0.05))
        routed.stream.cancel()
        await asyncio.sleep(0.5)
        assert t.cloud.opened == 2 and t.cloud.cancelled == 1

    asyncio.run(run())


def test_an_in_process_attempt_past_the_deadline_is_cancelled() -> None:
    async def run() -> None:
        router, t = make_router(models=["small", "large"])
        t.large.kind = "engine"
        t.large.first_delay_s = 0.3
        routed = await router.route(call(escalation_deadline_s=0.05))
        routed.stream.cancel()
        await asyncio.sleep(0.5)
        assert t.large.opened == 1 and t.large.produced == 0  # never got to generate

    asyncio.run(run())


def test_the_held_answer_keeps_generating_and_stops_when_the_client_leaves() -> None:
    async def run() -> None:
        router, t = make_router(models=["small", "cloud"])
        t.small.token_delay_s = 0.01
        t.cloud.first_delay_s = 0.3
        task = asyncio.create_task(router.route(call()))
        await asyncio.sleep(0.2)
        assert t.small.produced == 5  # past the 2 judged tokens while the cloud is awaited
        task.cancel()  # the client left
        with pytest.raises(asyncio.CancelledError):
            await task
        assert t.small.cancelled == 1 and t.small.produced == 5  # stopped once it had finished

        router, t = make_router(models=["small", "cloud"])
        t.small.token_delay_s = 0.2
        t.cloud.first_delay_s = 1.0
        task = asyncio.create_task(router.route(call()))
        await asyncio.sleep(0.3)  # the 2 judged tokens are in, the third is not
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert t.small.cancelled == 1 and t.small.produced == 2

    asyncio.run(run())


def test_a_top_tier_dying_after_its_first_token_ends_with_an_error_not_a_switch() -> None:
    async def run() -> None:
        router, t = make_router(models=["small", "cloud"])
        t.cloud.die_after = 1
        routed = await router.route(call())
        text, last = await answer(routed)
        assert text == "c1" and isinstance(last, Failed)  # no small tokens after the cloud's
        assert route_dict(routed)["degraded"] is False and t.small.cancelled == 1

    asyncio.run(run())


def test_degraded_answers_are_counted_per_model_and_reason() -> None:
    async def run() -> None:
        router, t = make_router()
        t.cloud.fail = UpstreamError("boom", status=503, source=t.cloud.id)
        for _ in range(2):
            (await router.route(call())).stream.cancel()  # large degraded: cloud errored
        t.cloud.fail = None  # the circuit is open now (threshold 1): skipped
        (await router.route(call())).stream.cancel()
        t.large.state.record_failure("x")
        (await router.route(call())).stream.cancel()  # both down: small degraded
        t.cloud.state, t.large.state = ReplicaState(), ReplicaState()
        (await router.route(call())).stream.cancel()  # not degraded

        text = generate_latest(router.metrics.registry).decode()
        counted = {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("edgellm_gateway_degraded_answers_total{")
        }
        name = "edgellm_gateway_degraded_answers_total"
        assert counted == {
            f'{name}{{model="large",policy="cascade",reason="error"}}': 1.0,
            f'{name}{{model="large",policy="cascade",reason="down"}}': 2.0,
            f'{name}{{model="small",policy="cascade",reason="down"}}': 1.0,
        }

    asyncio.run(run())


def test_private_requests_are_degraded_to_the_edge_never_sent_up() -> None:
    async def run() -> None:
        router, t = make_router()
        c = call()
        c.headers = {"x-edgellm-private": "1"}
        routed = await router.route(c)
        assert route_dict(routed)["model"] == "large" and t.cloud.opened == 0
        assert route_dict(routed)["degraded"] is False  # the cloud was never a candidate
        routed.stream.cancel()

    asyncio.run(run())
