"""Cache-aware replica choice: the prefix index, its bounds and corrections, load balance."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from edgellm.config import AffinitySettings
from edgellm.engine.types import (
    Finished,
    FinishReason,
    TextDelta,
    Timings,
    ToolCallDelta,
)
from edgellm.gateway.affinity import (
    AnswerText,
    PrefixIndex,
    ReplicaAffinity,
    block_hashes,
    continuation_bytes,
    prompt_bytes,
)
from edgellm.gateway.health import ReplicaState
from edgellm.gateway.metrics import GatewayMetrics
from edgellm.gateway.policies.load import LoadPolicy, LoadPolicyConfig
from edgellm.gateway.route import Candidate, Route

_ids = itertools.count()


@dataclass
class FakeReplica:
    id: str
    state: ReplicaState = field(default_factory=ReplicaState)


@dataclass
class FakeCall:
    """What the affinity reads of a gateway `GatewayRequest`."""

    messages: list[dict[str, Any]] | None
    history: list[dict[str, Any]] | None = None
    body: Any = None
    answer_id: str = field(default_factory=lambda: f"chatcmpl-{next(_ids)}")
    private: bool = False
    max_tokens: int | None = 16
    echoes_prompt: bool = False

    def estimated_prompt_tokens(self) -> int:
        return len(prompt_bytes(self)) // 4  # type: ignore[arg-type]


def conversation(topic: str, turns: int) -> list[list[dict[str, Any]]]:
    """The prompts of a conversation's turns: each resends the history."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": "You are terse. " * 8}]
    prompts = []
    for t in range(turns):
        messages.append({"role": "user", "content": f"{topic} question {t}: " + "why? " * 40})
        prompts.append(list(messages))
        messages.append({"role": "assistant", "content": f"{topic} answer {t} " + "so. " * 40})
    return prompts


def finished(cache_n: int, prompt_n: int) -> Finished:
    return Finished(
        FinishReason.STOP, cache_n + prompt_n, 8, Timings(cache_n=cache_n, prompt_n=prompt_n)
    )


def serve(aff: ReplicaAffinity, replicas: list[FakeReplica], messages: list[Any]) -> FakeReplica:
    """Route one request and record that the first replica of the order took it."""
    call = FakeCall(messages)
    chosen = aff.order(replicas, call)[0]  # type: ignore[arg-type]
    aff.routed(chosen.id, call)  # type: ignore[arg-type]
    return chosen


def test_an_earlier_turn_is_a_prefix_of_the_next_and_another_conversation_shares_nothing() -> None:
    a1, a2 = conversation("rust", 2)
    b1 = conversation("cats", 1)[0]
    b1[0] = {"role": "system", "content": "Another system prompt. " * 8}
    ha1 = block_hashes(prompt_bytes(FakeCall(a1)), 64)  # type: ignore[arg-type]
    ha2 = block_hashes(prompt_bytes(FakeCall(a2)), 64)  # type: ignore[arg-type]
    hb1 = block_hashes(prompt_bytes(FakeCall(b1)), 64)  # type: ignore[arg-type]
    assert len(ha1) >= 4 and ha2[: len(ha1)] == ha1
    assert not set(hb1) & set(ha1)


def test_history_from_a_conversation_id_counts_like_resent_messages() -> None:
    a2 = conversation("rust", 2)[1]
    resent = prompt_bytes(FakeCall(a2))  # type: ignore[arg-type]
    stored = prompt_bytes(FakeCall([a2[-1]], history=a2))  # type: ignore[arg-type]
    assert stored == resent
    assert prompt_bytes(FakeCall([a2[-1]])) != resent  # type: ignore[arg-type]


def test_a_later_turn_goes_where_its_history_is_and_a_new_conversation_does_not_follow() -> None:
    aff = ReplicaAffinity("m")
    replicas = [FakeReplica("r0"), FakeReplica("r1"), FakeReplica("r2")]
    convs = [conversation(f"topic{i}", 4) for i in range(6)]
    first = [serve(aff, replicas, c[0]).id for c in convs]
    assert len(set(first)) == 3  # new conversations spread over the replicas
    for turn in range(1, 4):
        for c, home in zip(convs, first, strict=True):
            info = Route()
            call = FakeCall(c[turn])
            chosen = aff.order(replicas, call, info)[0]  # type: ignore[arg-type]
            aff.routed(chosen.id, call)  # type: ignore[arg-type]
            assert chosen.id == home
            assert info.signals["affinity"]["reason"] == "cached prefix"
            expected = info.signals["affinity"]["expected_cached_tokens"]
            # the others hold the shared system prompt at most
            assert expected[home] > max(v for k, v in expected.items() if k != home)


def test_without_a_cached_prefix_the_least_loaded_replica_wins() -> None:
    aff = ReplicaAffinity("m")
    replicas = [FakeReplica("r0"), FakeReplica("r1")]
    replicas[0].state.outstanding = 2
    info = Route()
    order = aff.order(replicas, FakeCall(conversation("x", 1)[0]), info)  # type: ignore[arg-type]
    assert [r.id for r in order] == ["r1", "r0"]
    assert info.signals["affinity"]["reason"] == "no cached prefix"


def test_the_cached_replica_gives_way_beyond_its_bounded_load_and_the_override_is_counted() -> None:
    metrics = GatewayMetrics()
    aff = ReplicaAffinity("m", AffinitySettings(balance=1.25), metrics)
    replicas = [FakeReplica("r0"), FakeReplica("r1")]
    t1, t2 = conversation("hot", 2)
    home = serve(aff, replicas, t1)
    other = next(r for r in replicas if r is not home)
    home.state.outstanding = 1  # within the bound: ceil(1.25 * 2 / 2) = 2
    assert aff.order(replicas, FakeCall(t2))[0] is home  # type: ignore[arg-type]
    home.state.outstanding = 3  # ceil(1.25 * 4 / 2) = 3 < 4
    info = Route()
    assert aff.order(replicas, FakeCall(t2), info)[0] is other  # type: ignore[arg-type]
    assert info.signals["affinity"]["reason"] == "cached prefix, overloaded"
    metrics.fold()
    overrides = metrics.affinity_overrides.labels("m", home.id)._value.get()
    assert overrides == 1 and aff.overrides == 1


def test_a_replica_keeps_at_most_its_capacity_and_the_oldest_conversations_go_first() -> None:
    settings = AffinitySettings(block_bytes=64, capacity_tokens=400)  # 400 * 4 / 64 = 25 blocks
    aff = ReplicaAffinity("m", settings)
    only = [FakeReplica("r0")]
    convs = [conversation(f"t{i}", 1)[0] for i in range(6)]
    for c in convs:
        serve(aff, only, c)
    assert aff.index.held("r0") == 25
    blocks = [block_hashes(prompt_bytes(FakeCall(c)), 64) for c in convs]  # type: ignore[arg-type]
    newest = aff.index.match(blocks[-1], ["r0"])["r0"]
    oldest = aff.index.match(blocks[0], ["r0"])["r0"]
    assert newest == len(blocks[-1])
    assert oldest < newest  # only the shared system prompt's blocks are left of it


def test_the_whole_index_is_bounded_in_blocks() -> None:
    index = PrefixIndex(block=16, capacity_blocks=1000, max_blocks=50)
    for r in range(5):
        index.insert(f"r{r}", list(range(r * 100, r * 100 + 30)))
    assert index.size <= 50
    assert index.size == sum(index.held(f"r{r}") for r in range(5))
    assert sum(len(v) for v in index.where.values()) == index.size


def test_a_forgotten_replica_leaves_the_blocks_others_hold() -> None:
    index = PrefixIndex(block=16, capacity_blocks=1000, max_blocks=1000)
    index.insert("r0", [1, 2, 3])
    index.insert("r1", [1, 2])
    index.forget("r0")
    assert index.match([1, 2, 3], ["r0", "r1"]) == {"r0": 0, "r1": 2}
    assert 3 not in index.where and index.where[1] == {"r1"}  # r0's own block is gone
    assert index.size == 2 and index.replicas() == {"r1"}


def test_a_reported_miss_shrinks_the_replica_capacity_and_hits_grow_it_back() -> None:
    settings = AffinitySettings(block_bytes=64, capacity_tokens=2000)
    aff = ReplicaAffinity("m", settings)
    only = [FakeReplica("r0")]
    for i in range(6):
        serve(aff, only, conversation(f"t{i}", 1)[0])
    full = aff.index.capacity["r0"]
    t2 = conversation("t0", 2)[1]
    call = FakeCall(t2)
    aff.order(only, call)  # type: ignore[arg-type]
    aff.routed("r0", call)  # type: ignore[arg-type]
    aff.finished("r0", call, finished(cache_n=0, prompt_n=300))  # type: ignore[arg-type]
    shrunk = aff.index.capacity["r0"]
    assert shrunk < full
    assert aff.index.held("r0") <= shrunk
    # a hit as expected, at full (shrunk) capacity: the bound grows again
    for i in range(20):
        c1, c2 = conversation(f"g{i}", 2)
        serve(aff, only, c1)
        call = FakeCall(c2)
        aff.order(only, call)  # type: ignore[arg-type]
        aff.routed("r0", call)  # type: ignore[arg-type]
        expected = aff.tokens(aff._tickets[call.answer_id].expected["r0"])
        aff.finished("r0", call, finished(cache_n=expected, prompt_n=50))  # type: ignore[arg-type]
    assert aff.index.capacity["r0"] > shrunk


def test_an_answer_without_timings_corrects_nothing() -> None:
    aff = ReplicaAffinity("m", AffinitySettings(block_bytes=64))
    only = [FakeReplica("r0")]
    t1, t2 = conversation("a", 2)
    serve(aff, only, t1)
    call = FakeCall(t2)
    aff.order(only, call)  # type: ignore[arg-type]
    aff.routed("r0", call)  # type: ignore[arg-type]
    before = aff.index.capacity["r0"]
    aff.finished("r0", call, finished(cache_n=0, prompt_n=0))  # type: ignore[arg-type]
    assert aff.index.capacity["r0"] == before


def test_the_bytes_per_token_estimate_follows_the_reported_prompt_tokens() -> None:
    aff = ReplicaAffinity("m")
    only = [FakeReplica("r0")]
    for i in range(30):
        call = FakeCall(conversation(f"c{i}", 1)[0])
        aff.order(only, call)  # type: ignore[arg-type]
        aff.routed("r0", call)  # type: ignore[arg-type]
        n = len(prompt_bytes(call))  # type: ignore[arg-type]
        aff.finished("r0", call, finished(cache_n=0, prompt_n=n // 2))  # type: ignore[arg-type]
    assert aff.bytes_per_token == pytest.approx(2.0, rel=0.05)


@pytest.mark.parametrize("how", ["down", "left"])
def test_a_replica_that_goes_down_or_leaves_loses_its_conversations(how: str) -> None:
    aff = ReplicaAffinity("m")
    replicas = [FakeReplica("r0"), FakeReplica("r1")]
    t1, t2, t3 = conversation("moving", 3)
    home = serve(aff, replicas, t1)
    other = next(r for r in replicas if r is not home)
    if how == "down":
        home.state.healthy = False
        present = replicas
    else:
        present = [other]
    order = aff.order(present, FakeCall(t2))  # type: ignore[arg-type]
    assert order[0] is other and home.id not in aff.index.replicas()
    aff.routed(other.id, FakeCall(t2))  # type: ignore[arg-type]
    home.state.healthy = True  # back, with an empty cache: the conversation stays moved
    assert aff.order(replicas, FakeCall(t3))[0] is other  # type: ignore[arg-type]


def test_a_single_hot_conversation_does_not_take_more_than_its_share_of_new_ones() -> None:
    """New conversations avoid the replica a hot conversation keeps busy."""
    aff = ReplicaAffinity("m")
    replicas = [FakeReplica("r0"), FakeReplica("r1")]
    hot = conversation("hot", 12)
    home = serve(aff, replicas, hot[0])
    counts = {"r0": 0, "r1": 0}
    counts[home.id] += 1
    for turn in range(1, 12):
        counts[serve(aff, replicas, hot[turn]).id] += 1
        counts[serve(aff, replicas, conversation(f"cold{turn}", 1)[0]).id] += 1
    assert counts[home.id] == 12  # every hot turn stayed home
    other = next(r for r in replicas if r is not home).id
    assert counts[other] >= 9  # most new conversations went to the other replica


def test_a_policy_that_ranks_replicas_itself_sees_the_expected_cached_tokens() -> None:
    aff = ReplicaAffinity("m")
    replicas = [FakeReplica("r0"), FakeReplica("r1")]
    t1, t2 = conversation("ranked", 2)
    home = serve(aff, replicas, t1)
    call = FakeCall(t2)
    expected = aff.expect(replicas, call)  # type: ignore[arg-type]
    other = next(r for r in replicas if r is not home)
    assert expected[home.id] > expected[other.id]
    assert expected[home.id] <= len(prompt_bytes(call)) / aff.bytes_per_token  # type: ignore[arg-type]
    aff.routed(other.id, call)  # the policy sent it elsewhere: that replica holds it now
    # it holds all of this prompt now, more than the first turn the other replica has
    assert aff.expect([other], FakeCall(t2))[other.id] > expected[home.id]  # type: ignore[arg-type,list-item]


class LoadContext:
    """What the `load` policy uses of the gateway: its candidates, and execute (which records
    the order it was given instead of starting an answer)."""

    def __init__(self, model: Candidate) -> None:
        self.model = model
        self.tried: list[str] = []

    def candidates(self, names: Any = ()) -> list[Candidate]:
        return [self.model]

    async def execute(self, call: Any, models: list[Candidate], info: Route, **kw: Any) -> Any:
        self.tried = [r.id for m in models for r in m.replicas]
        return info


@pytest.mark.parametrize("indexed", [True, False])
def test_the_load_policy_counts_a_cached_prefix_as_prefill_saved(indexed: bool) -> None:
    replicas = [FakeReplica("r0"), FakeReplica("r1")]
    aff = ReplicaAffinity("m") if indexed else None
    model = Candidate("m", "edge-small", 0.0, None, replicas, affinity=aff)  # type: ignore[arg-type]
    t1, t2 = conversation("load", 2)
    if aff is not None:
        first = FakeCall(t1)
        aff.expect(replicas, first)  # type: ignore[arg-type]
        aff.routed("r1", first)  # type: ignore[arg-type]
    ctx = LoadContext(model)
    policy = LoadPolicy(LoadPolicyConfig(name="balanced"), ctx)  # type: ignore[arg-type]
    info = Route(policy="load")
    asyncio.run(policy.route(FakeCall(t2), info))  # type: ignore[arg-type]
    # equal replicas: the one holding the conversation goes first; without an index, the first
    assert ctx.tried[0] == ("r1" if indexed else "r0")
    assert ("expected_cached_tokens" in info.signals) is indexed


def test_a_shared_system_prompt_alone_does_not_steer_but_the_conversation_after_it_does() -> None:
    aff = ReplicaAffinity("m")
    replicas = [FakeReplica("r0"), FakeReplica("r1")]
    system = {"role": "system", "content": "A long shared instruction. " * 30}
    first = [system, {"role": "user", "content": "hello " * 30}]
    home = serve(aff, replicas, first)
    other = next(r for r in replicas if r is not home)
    info = Route()
    new = [system, {"role": "user", "content": "something else " * 30}]
    chosen = aff.order(replicas, FakeCall(new), info)[0]  # type: ignore[arg-type]
    assert chosen is other  # the replica that took the fewest recent requests
    assert info.signals["affinity"]["reason"] == "no cached prefix"
    assert info.signals["affinity"]["expected_cached_tokens"][home.id] > 0
    later = [*first, {"role": "assistant", "content": "hi"}, {"role": "user", "content": "more"}]
    info = Route()
    assert aff.order(replicas, FakeCall(later), info)[0] is home  # type: ignore[arg-type]
    assert info.signals["affinity"]["reason"] == "cached prefix"


def test_a_short_conversation_is_steered_from_its_first_block_beyond_the_system_prompt() -> None:
    aff = ReplicaAffinity("m")
    replicas = [FakeReplica("r0"), FakeReplica("r1")]
    first = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "x" * 200}]
    home = serve(aff, replicas, first)
    later = [*first, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "and?"}]
    info = Route()
    assert aff.order(replicas, FakeCall(later), info)[0] is home  # type: ignore[arg-type]
    assert info.signals["affinity"]["reason"] == "cached prefix"


@pytest.mark.parametrize("sent_back", ["as answered", "edited", "unknown"])
def test_a_first_turn_shorter_than_a_block_is_found_by_the_next_turn_through_its_answer(
    sent_back: str,
) -> None:
    aff = ReplicaAffinity("m")  # 128-byte blocks: the first prompt below fills none
    replicas = [FakeReplica("r0"), FakeReplica("r1"), FakeReplica("r2")]
    first = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Who made Berlin?"},
    ]
    assert len(prompt_bytes(FakeCall(first))) < 128  # type: ignore[arg-type]
    call = FakeCall(first)
    home = aff.order(replicas, call)[0]  # type: ignore[arg-type]
    aff.routed(home.id, call)  # type: ignore[arg-type]
    answer = "Berlin grew from two trading towns, Berlin and Colln, on the river Spree."
    aff.finished(home.id, call, finished(0, 30), None if sent_back == "unknown" else answer)  # type: ignore[arg-type]
    reply = answer.upper() if sent_back == "edited" else answer
    later = [*first, {"role": "assistant", "content": reply}, {"role": "user", "content": "When?"}]
    info = Route()
    # home served the one recent request: the tie-break of a new conversation passes it over
    chosen = aff.order(replicas, FakeCall(later), info)[0]  # type: ignore[arg-type]
    if sent_back == "as answered":
        assert chosen is home
        assert info.signals["affinity"]["reason"] == "cached prefix"
    else:
        assert chosen is not home
        assert info.signals["affinity"]["reason"] == "no cached prefix"


def test_the_next_turn_is_predicted_for_plain_text_answers_only() -> None:
    chat = FakeCall([{"role": "user", "content": "hi"}])
    said = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    nxt = prompt_bytes(FakeCall(said))  # type: ignore[arg-type]
    assert prompt_bytes(chat) + continuation_bytes(chat, "yo") == nxt  # type: ignore[arg-type,operator]
    text = FakeCall(None, body=type("B", (), {"prompt": "Once upon"})())
    assert continuation_bytes(text, " a time") == b" a time"  # type: ignore[arg-type]
    tokens = FakeCall(None, body=type("B", (), {"prompt": [1, 2, 3]})())
    assert continuation_bytes(tokens, "x") is None  # type: ignore[arg-type]
    echoed = FakeCall(None, body=type("B", (), {"prompt": "Once"})(), echoes_prompt=True)
    assert continuation_bytes(echoed, "Once upon") is None  # type: ignore[arg-type]
    collected = AnswerText()
    collected.add(TextDelta("Par", ()))
    collected.add(TextDelta("is", ()))
    assert collected.text == "Paris"
    collected.add(ToolCallDelta(0, "call_1", "lookup", "{}"))
    assert collected.text is None


@pytest.mark.parametrize("bounded", [True, False])
def test_a_replica_past_its_share_of_recent_requests_takes_no_new_conversation(
    bounded: bool,
) -> None:
    aff = ReplicaAffinity("m", AffinitySettings(balance=1.25 if bounded else 100.0))
    replicas = [FakeReplica("r0"), FakeReplica("r1"), FakeReplica("r2")]
    hot = conversation("hot", 20)
    home = serve(aff, replicas, hot[0])
    others = [r for r in replicas if r is not home]
    counts = dict.fromkeys((r.id for r in replicas), 0)
    for turn in range(1, 20):
        # the hot conversation always has a request outstanding; so does one other replica
        home.state.outstanding = 1
        others[turn % 2].state.outstanding = 1
        others[(turn + 1) % 2].state.outstanding = 0
        assert serve(aff, replicas, hot[turn]) is home
        for r in others:
            r.state.outstanding = 2  # the hot replica is the least loaded at this moment
        counts[serve(aff, replicas, conversation(f"new{turn}", 1)[0]).id] += 1
    if bounded:
        assert counts[home.id] == 0
    else:
        assert counts[home.id] > 0


def long_prompt(topic: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"{topic}: " + "a long document to summarize. " * 300}]


@pytest.mark.parametrize("long_on", ["r0", "r1"])
def test_a_new_conversation_starts_beside_the_replica_with_less_prefill_to_do(long_on: str) -> None:
    """At equal outstanding requests, the replica still prefilling a long prompt is avoided,
    whichever it is."""
    aff = ReplicaAffinity("m")
    replicas = [FakeReplica("r0"), FakeReplica("r1")]
    by_id = {r.id: r for r in replicas}
    short_on = "r1" if long_on == "r0" else "r0"
    for rid, messages in ((long_on, long_prompt("doc")), (short_on, conversation("hi", 1)[0])):
        call = FakeCall(messages)
        aff.order(replicas, call)  # type: ignore[arg-type]
        aff.sending(rid, call)  # type: ignore[arg-type]
        by_id[rid].state.outstanding = 1
    info = Route()
    chosen = aff.order(replicas, FakeCall(conversation("new", 1)[0]), info)[0]  # type: ignore[arg-type]
    assert chosen.id == short_on
    backlog = info.signals["affinity"]["prefill_backlog_s"]
    assert backlog[long_on] > backlog[short_on] > 0


def test_the_prefill_backlog_ends_with_the_first_token_a_failure_or_staleness() -> None:
    aff = ReplicaAffinity("m")
    replicas = [FakeReplica("r0"), FakeReplica("r1")]
    r0 = replicas[0]
    calls = [FakeCall(long_prompt(f"doc{i}")) for i in range(3)]
    for call in calls:
        aff.order(replicas, call)  # type: ignore[arg-type]
        aff.sending("r0", call)  # type: ignore[arg-type]
    full = aff.prefill_backlog_s(r0)
    assert full > 0
    aff.routed("r0", calls[0])  # type: ignore[arg-type]  # its first token came back
    one_less = aff.prefill_backlog_s(r0)
    assert 0 < one_less < full
    aff.sending("r1", calls[1])  # type: ignore[arg-type]  # retried on the other replica
    assert 0 < aff.prefill_backlog_s(r0) < one_less
    assert aff.prefill_backlog_s(replicas[1]) > 0
    aff.abandoned(calls[1])  # type: ignore[arg-type]
    assert aff.prefill_backlog_s(replicas[1]) == 0
    # the last one never reports back: worked off at the measured speed, then forgotten
    later = time.monotonic() + 10_000
    assert aff.prefill_backlog_s(r0, later) == 0
    assert aff._prefilling["r0"] == {}


@pytest.mark.parametrize("home_busy", [True, False])
def test_a_replica_past_its_share_takes_a_new_conversation_only_when_idle(home_busy: bool) -> None:
    """Its share of the recent requests is history: while it is idle and the others are busy,
    passing it over would only make two conversations share a replica."""
    aff = ReplicaAffinity("m")
    replicas = [FakeReplica("r0"), FakeReplica("r1"), FakeReplica("r2")]
    hot = conversation("hot", 10)
    home = serve(aff, replicas, hot[0])
    for turn in range(1, 10):
        assert serve(aff, replicas, hot[turn]) is home  # past its share by now
    for r in replicas:
        r.state.outstanding = 1 if (r is not home or home_busy) else 0
    chosen = aff.order(replicas, FakeCall(conversation("new", 1)[0]))[0]  # type: ignore[arg-type]
    assert (chosen is home) is not home_busy
