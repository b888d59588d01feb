"""Continuous batching on the real SmolLM2 model: several slots, per-slot or shared KV cells."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edgellm.config import EngineConfig
from edgellm.engine.engine import Engine
from edgellm.engine.jobs import common_prefix_len
from edgellm.engine.types import Failed, Finished, GenerationRequest, SamplingParams, TextDelta
from tests.integration.servers import RunningServer, smollm2_config, start_server

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m-instruct"
QUESTIONS = [
    "Name three colours.",
    "What is the capital of Italy?",
    "Write one sentence about the sea.",
    "Count from one to five.",
]


async def generate(engine: Engine, prompt: list[int], max_tokens: int) -> tuple[str, Finished]:
    text, _, done = await generate_ids(engine, prompt, max_tokens)
    return text, done


async def generate_ids(
    engine: Engine, prompt: list[int], max_tokens: int
) -> tuple[str, list[int], Finished]:
    text, ids = "", []
    request = GenerationRequest(
        prompt_tokens=prompt, max_tokens=max_tokens, sampling=SamplingParams(temperature=0)
    )
    async for event in engine.submit(request):
        if isinstance(event, TextDelta):
            text += event.text
            ids += event.token_ids
        elif isinstance(event, Finished):
            return text, ids, event
        elif isinstance(event, Failed):
            raise event.error
    raise AssertionError("no final event")


@pytest.fixture(scope="module", params=[False, True], ids=["per-slot-cells", "shared-cells"])
def engines(
    model_paths: dict[str, Path], request: pytest.FixtureRequest
) -> Iterator[tuple[Engine, Engine]]:
    path = model_paths[MODEL]
    serial = Engine.load(MODEL, path, EngineConfig(n_ctx=4096, n_threads=2))
    batched = Engine.load(
        MODEL, path, EngineConfig(n_ctx=4096, n_threads=2, parallel=4, kv_unified=request.param)
    )
    assert batched.scheduler.n_slots == 4
    yield serial, batched
    serial.close()
    batched.close()


def test_single_stream_matches_the_serial_engine(engines: tuple[Engine, Engine]) -> None:
    serial, batched = engines
    for question in QUESTIONS[:2]:
        prompt = serial.chat_prompt([{"role": "user", "content": question}])
        expected, _ = asyncio.run(generate(serial, prompt, 32))
        got, done = asyncio.run(generate(batched, prompt, 32))
        assert got == expected
        assert done.prompt_tokens == len(prompt)
        assert done.timings.ttft_ms > 0 and done.timings.prompt_ms > 0


def test_concurrent_streams_share_batches(engines: tuple[Engine, Engine]) -> None:
    _, batched = engines
    stats_before = batched.scheduler.stats.steps, batched.scheduler.stats.tokens_in_batches
    prompts = [batched.chat_prompt([{"role": "user", "content": q}]) for q in QUESTIONS]

    async def all_at_once() -> list[tuple[str, Finished]]:
        return await asyncio.gather(*(generate(batched, p, 24) for p in prompts))

    results = asyncio.run(all_at_once())
    for text, done in results:
        assert text.strip()
        assert 0 < done.completion_tokens <= 24
    steps = batched.scheduler.stats.steps - stats_before[0]
    tokens = batched.scheduler.stats.tokens_in_batches - stats_before[1]
    generated = sum(done.completion_tokens for _, done in results)
    # Four streams decoded together need far fewer llama_decode calls than tokens generated.
    assert steps < generated
    assert tokens / steps > 1.5


def test_conversations_keep_their_prefix_across_slots(engines: tuple[Engine, Engine]) -> None:
    _, batched = engines
    histories = [[{"role": "user", "content": q}] for q in QUESTIONS]
    first_prompts = [batched.chat_prompt(h) for h in histories]

    async def two_turns() -> list[tuple[set[int], Finished]]:
        firsts = await asyncio.gather(*(generate_ids(batched, p, 16) for p in first_prompts))
        expected, second_prompts = [], []
        for h, p, (text, ids, _) in zip(histories, first_prompts, firsts, strict=True):
            h += [{"role": "assistant", "content": text}, {"role": "user", "content": "Why?"}]
            prompt = batched.chat_prompt(h)
            second_prompts.append(prompt)
            # The slot holds the first prompt and the answer, its last token decoded or not (a
            # generation that stops at max_tokens may end before feeding it back).
            expected.append(
                {len(prompt) - common_prefix_len(p + ids[:k], prompt) for k in (-1, 16)}
            )
        seconds = await asyncio.gather(*(generate_ids(batched, p, 8) for p in second_prompts))
        for (_, _, first), (_, _, second) in zip(firsts, seconds, strict=True):
            assert second.timings.cache_n >= first.prompt_tokens
        return [(e, done) for e, (_, _, done) in zip(expected, seconds, strict=True)]

    for new_tokens, done in asyncio.run(two_turns()):
        # Only what follows the longest prefix shared with the slot's tokens is prefilled: the
        # new turn, plus any of the answer that re-tokenises differently from how it was
        # generated (greedy output can pick a non-canonical split of a word).
        assert done.timings.prompt_n in new_tokens
        assert done.timings.prompt_n < done.prompt_tokens - 16


def test_evicted_conversation_comes_back_from_saved_state(model_paths: dict[str, Path]) -> None:
    engine = Engine.load(
        MODEL, model_paths[MODEL], EngineConfig(n_ctx=4096, n_threads=2, parallel=2)
    )
    try:

        async def run() -> Finished:
            long_context = "You are a careful assistant. " * 12
            convo = [
                {"role": "system", "content": long_context},
                {"role": "user", "content": "Hello"},
            ]
            await generate(engine, engine.chat_prompt(convo), 4)
            # Two other conversations take both slots, so the first one's cache is saved aside.
            others = [[{"role": "user", "content": q * 6}] for q in QUESTIONS[:2]]
            await asyncio.gather(*(generate(engine, engine.chat_prompt(o), 4) for o in others))
            await asyncio.gather(*(generate(engine, engine.chat_prompt(o), 4) for o in others))
            convo.append({"role": "user", "content": "Again"})
            _, done = await generate(engine, engine.chat_prompt(convo), 4)
            return done

        done = asyncio.run(run())
        assert engine.scheduler.stats.state_saves >= 1
        assert engine.scheduler.stats.state_restores >= 1
        assert done.timings.cache_n >= 0.85 * done.prompt_tokens  # all but the new turn
    finally:
        engine.close()


def test_scoring_matches_the_serial_engine(engines: tuple[Engine, Engine]) -> None:
    serial, batched = engines
    pairs = [("The capital of France is", " Paris"), ("1, 2, 3, 4,", " 5, 6, 7")]
    expected = asyncio.run(serial.loglikelihood(pairs))
    got = asyncio.run(batched.loglikelihood(pairs))
    for e, g in zip(expected, got, strict=True):
        assert g.logprob == pytest.approx(e.logprob, abs=1e-4)
        assert g.is_greedy == e.is_greedy
        assert g.n_tokens == e.n_tokens


@pytest.fixture(scope="module")
def batch_server() -> Iterator[RunningServer]:
    server = start_server([smollm2_config(parallel=2, n_ctx=1024)])
    yield server
    server.stop()


def test_one_stream_cancelled_while_the_other_runs(batch_server: RunningServer) -> None:
    engine = batch_server.pool.get(MODEL)
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Tell me a long story."}],
        "max_tokens": 200,
        "ignore_eos": True,
        "temperature": 0,
    }
    finished: dict[str, object] = {}

    def full() -> None:
        with httpx.Client(base_url=batch_server.url, timeout=120) as http:
            finished.update(http.post("/v1/chat/completions", json=body).json())

    runner = threading.Thread(target=full)
    runner.start()
    with (
        httpx.Client(base_url=batch_server.url, timeout=60) as http,
        http.stream("POST", "/v1/chat/completions", json=body | {"stream": True}) as response,
    ):
        for n, _ in enumerate(response.iter_lines()):
            if n > 10:
                break
    runner.join(timeout=120)
    assert finished["usage"]["completion_tokens"] == 200  # type: ignore[index]
    assert engine.scheduler.running == 0


@pytest.mark.parametrize("kv_unified", [True, False], ids=["shared-cells", "per-slot-cells"])
def test_kv_cache_full_is_a_clear_error(kv_unified: bool) -> None:
    server = start_server([smollm2_config(parallel=2, n_ctx=256, kv_unified=kv_unified)])
    try:
        body = {
            "model": MODEL,
            "prompt": "word " * 60,
            "max_tokens": 150,
            "ignore_eos": True,
            "temperature": 0,
        }
        statuses: list[int] = []
        errors: list[str] = []

        def call() -> None:
            with httpx.Client(base_url=server.url, timeout=120) as http:
                r = http.post("/v1/completions", json=body)
                statuses.append(r.status_code)
                if r.status_code != 200:
                    errors.append(r.json()["error"]["code"])

        threads = [threading.Thread(target=call) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        if kv_unified:
            # 2 x (61 + 150) tokens do not fit in 256 shared cells: one request completes, the
            # other fails with a 503 that says why, and nothing hangs.
            assert sorted(statuses) == [200, 503]
            assert errors == ["kv_cache_full"]
        else:
            # Each slot has its own 256 cells: a request that passed validation always fits.
            assert statuses == [200, 200]
    finally:
        server.stop()
