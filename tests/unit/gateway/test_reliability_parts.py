import asyncio
import time

import httpx
import pytest

from edgellm.config import ApiKeyConfig, EdgeLLMConfig
from edgellm.engine.types import Timings
from edgellm.gateway.auth import TokenBucket, hash_key
from edgellm.gateway.conversations import Conversations, estimate_tokens, trim
from edgellm.gateway.health import ReplicaState
from edgellm.gateway.router import Router


def test_circuit_opens_after_consecutive_failures_and_recovers() -> None:
    s = ReplicaState(max_concurrency=2, failure_threshold=2, cooldown_s=60)
    s.record_failure("boom")
    assert s.available() and s.circuit == "closed"
    s.record_failure("boom")
    assert not s.available() and s.circuit == "open"
    s.record_health(True)  # an active check succeeded: half-open, one trial allowed
    assert s.available() and s.circuit == "half-open"
    s.record_success(None, 0.1)
    assert s.circuit == "closed" and s.consecutive_failures == 0
    s.record_health(False)
    assert not s.available()


def test_estimate_uses_measured_speeds() -> None:
    s = ReplicaState()
    before = s.estimate_s(100, 50)
    t = Timings(prompt_n=100, prompt_ms=50, predicted_n=51, predicted_ms=500, total_ms=600)
    for _ in range(20):
        s.record_success(t, 0.61)
    assert s.prefill_tps == pytest.approx(2000, rel=0.01)
    assert s.decode_tps == pytest.approx(100, rel=0.01)
    assert s.estimate_s(100, 50) < before
    s.outstanding = 3
    # measured here: 0.61 s per request, 2,000 prompt tok/s, 100 tok/s decode, 10 ms network;
    # three ahead of it (1.83 s) + 100 prompt tokens (0.05 s) + 50 tokens (0.5 s) + 0.01 s
    assert s.estimate_s(100, 50) == pytest.approx(2.39, abs=0.01)
    assert s.estimate_s(200, 50) - s.estimate_s(100, 50) == pytest.approx(0.05, abs=0.001)
    assert s.estimate_s(100, 100) - s.estimate_s(100, 50) == pytest.approx(0.5, abs=0.005)


def test_token_bucket() -> None:
    key = ApiKeyConfig(name="k", sha256=hash_key("x"), requests_per_minute=60, burst=2)
    b = TokenBucket.of(key)
    now = time.monotonic()
    assert b.take(now) == 0 and b.take(now) == 0
    assert b.take(now) == pytest.approx(1.0)
    assert b.take(now + 1.0) == 0
    assert hash_key("x") != "x" and len(hash_key("x")) == 64


def test_conversation_merge_and_trim() -> None:
    conv = Conversations(capacity=1)
    system = {"role": "system", "content": "sys"}
    first = conv.merge("a", [system, {"role": "user", "content": "u1"}])
    conv.record("a", first, "r1")
    merged = conv.merge("a", [{"role": "user", "content": "u2"}])
    assert [m["content"] for m in merged] == ["sys", "u1", "r1", "u2"]
    conv.record("b", merged, "x")
    assert conv.get("a") == []  # capacity 1: the least recently used went
    long = [system] + [{"role": "user", "content": "w" * 400} for _ in range(5)]
    kept = trim(long, 250, estimate_tokens)
    assert kept[0] == system and kept[-1] == long[-1] and len(kept) == 3
    assert trim(long[:2], 1, estimate_tokens) == long[:2]  # never drops the last turn


def test_only_a_real_health_check_closes_an_open_circuit() -> None:
    """A replica without a health path is not checked: its circuit stays open for the whole
    cooldown (a check that asks nothing would pass and send the next request into it); one
    whose health path answers 200 is half-open at once."""

    def backend(name: str, health_path: str | None) -> dict[str, object]:
        url = f"http://{name}.invalid/v1"
        return {"name": name, "backends": [{"url": url, "health_path": health_path}]}

    config = EdgeLLMConfig.model_validate(
        {"remote_models": [backend("unchecked", None), backend("checked", "/health")]}
    )
    ok = httpx.AsyncClient(transport=httpx.MockTransport(lambda _: httpx.Response(200)))
    router = Router(config, None, client=ok)
    states = {name: router.models[name].replicas[0].state for name in ("unchecked", "checked")}
    for state in states.values():
        for _ in range(state.failure_threshold):
            state.record_failure("refused")
    asyncio.run(router.check_all())
    assert not router.models["unchecked"].reachable()
    assert router.models["checked"].reachable() and states["checked"].circuit == "half-open"
