"""Client-side measurement against a fake server with known delays (generous margins: the
machine is shared, so delays can only grow, by scheduling noise)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from edgellm.bench.client import RequestSpec, measure
from edgellm.bench.records import RequestRecord
from tests.unit.bench.fakes import FakeBehaviour, FakeServer

TTFT, ITL, TOKENS = 0.3, 0.05, 10
KNOWN = FakeBehaviour(ttft_s=TTFT, itl_s=ITL, tokens=TOKENS)


def _measure(url: str, spec: RequestSpec, api: str = "openai") -> RequestRecord:
    async def go() -> RequestRecord:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            record = RequestRecord(request_id=0, model=spec.model, start_s=0.0)
            return await measure(client, spec, record, api=api)

    return asyncio.run(go())


def _check_latencies(r: RequestRecord) -> None:
    assert r.ok, r.error
    assert r.chunks == TOKENS
    assert r.completion_tokens == TOKENS
    assert r.ttft_s is not None and TTFT - 0.01 <= r.ttft_s <= TTFT + 0.5
    assert len(r.itl_s) == TOKENS - 1
    assert sorted(r.itl_s)[len(r.itl_s) // 2] == pytest.approx(ITL, abs=0.04)
    expected_e2e = TTFT + ITL * (TOKENS - 1)
    assert r.e2e_s is not None and expected_e2e - 0.01 <= r.e2e_s <= expected_e2e + 1.0
    assert r.client_decode_tps is not None and 1 / ITL * 0.4 <= r.client_decode_tps <= 1 / ITL * 1.1


@pytest.mark.parametrize("fake_server", [KNOWN], indirect=True)
def test_openai_chat_stream_latencies_and_llama_server_timings(fake_server: FakeServer) -> None:
    spec = RequestSpec(model="fake", messages=[{"role": "user", "content": "one two three"}])
    r = _measure(fake_server.url, spec)
    _check_latencies(r)
    assert r.prompt_tokens == 3
    assert r.client_prefill_tps == pytest.approx(3 / r.ttft_s)
    assert r.finish_reason == "length"
    assert r.server is not None and r.server.source == "llama-server"
    assert r.server_decode_tps == pytest.approx(1 / ITL)
    assert r.server_prefill_tps == pytest.approx(3 / TTFT)
    assert r.output == "".join(f"t{i} " for i in range(TOKENS))


@pytest.mark.parametrize("fake_server", [KNOWN], indirect=True)
def test_completions_stream(fake_server: FakeServer) -> None:
    r = _measure(fake_server.url, RequestSpec(model="fake", prompt="a b c d", ignore_eos=True))
    _check_latencies(r)
    assert r.prompt_tokens == 4


@pytest.mark.parametrize("fake_server", [KNOWN], indirect=True)
def test_ollama_native_stream_and_durations(fake_server: FakeServer) -> None:
    spec = RequestSpec(model="fake", messages=[{"role": "user", "content": "x y"}])
    r = _measure(fake_server.url, spec, api="ollama")
    _check_latencies(r)
    assert r.server is not None and r.server.source == "ollama"
    assert r.server.prompt_ms == pytest.approx(TTFT * 1e3)
    assert r.server_decode_tps == pytest.approx(1 / ITL)
    assert r.prompt_tokens == 2 and r.finish_reason == "length"


@pytest.mark.parametrize(
    "fake_server", [FakeBehaviour(ttft_s=0.0, itl_s=0.0, tokens=2, fail_every=1)], indirect=True
)
def test_http_error_is_a_failed_record(fake_server: FakeServer) -> None:
    r = _measure(
        fake_server.url, RequestSpec(model="fake", messages=[{"role": "user", "content": "x"}])
    )
    assert not r.ok and r.status == 500 and r.error == "boom"


def test_connection_refused_is_a_failed_record() -> None:
    r = _measure("http://127.0.0.1:9", RequestSpec(model="fake", prompt="x"))
    assert not r.ok and r.error is not None and "ConnectError" in r.error
