"""Cancellation, admission control, prefix reuse, readiness and metrics on a real server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgellm.config import ModelConfig
from tests.integration.servers import RunningServer, smollm2_config, start_server

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m-instruct"
LONG = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Tell me a very long story."}],
    "max_tokens": 1500,
    "ignore_eos": True,
    "temperature": 0,
}


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)
    return time.monotonic() - started


def metric_value(server: RunningServer, name: str, **labels: str) -> float:
    with server.http() as http:
        text = http.get("/metrics").text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def test_stream_disconnect_stops_generation_within_a_step(smol_server: RunningServer) -> None:
    engine = smol_server.pool.get(MODEL)
    cancelled_before = metric_value(smol_server, "edgellm_requests_cancelled_total", model=MODEL)
    generated_before = metric_value(smol_server, "edgellm_generation_tokens_total", model=MODEL)
    with (
        smol_server.http() as http,
        http.stream("POST", "/v1/chat/completions", json=LONG | {"stream": True}) as response,
    ):
        assert response.status_code == 200
        lines = response.iter_lines()
        received = 0
        for line in lines:
            if line.startswith("data: "):
                received += 1
            if received >= 10:
                break
        assert engine.scheduler.running == 1
    # the connection is closed: the engine must stop long before the 1500 tokens (~10 s)
    took = wait_for(lambda: engine.scheduler.running == 0, 3.0, "the engine to stop")
    assert took < 3.0
    wait_for(
        lambda: (
            metric_value(smol_server, "edgellm_requests_cancelled_total", model=MODEL)
            == cancelled_before + 1
        ),
        2.0,
        "the cancellation to be counted",
    )
    generated = (
        metric_value(smol_server, "edgellm_generation_tokens_total", model=MODEL) - generated_before
    )
    assert 10 <= generated < 1000


def test_non_streaming_disconnect_stops_generation(smol_server: RunningServer) -> None:
    engine = smol_server.pool.get(MODEL)
    with smol_server.http(timeout=0.5) as http, pytest.raises(httpx.ReadTimeout):
        http.post("/v1/chat/completions", json=LONG)
    wait_for(lambda: engine.scheduler.running == 0, 3.0, "the engine to stop")


def test_full_queue_gets_429_with_retry_after() -> None:
    server = start_server([smollm2_config(max_queue=1)])
    try:
        engine = server.pool.get(MODEL)
        stop = threading.Event()

        def hold() -> None:  # stream slowly until told to stop
            with (
                httpx.Client(base_url=server.url, timeout=60) as http,
                http.stream(
                    "POST", "/v1/chat/completions", json=LONG | {"stream": True}
                ) as response,
            ):
                for _ in response.iter_lines():
                    if stop.is_set():
                        return

        holders = [threading.Thread(target=hold) for _ in range(2)]
        holders[0].start()
        wait_for(lambda: engine.scheduler.running == 1, 10, "the first request to run")
        holders[1].start()
        wait_for(lambda: engine.scheduler.queue_depth == 1, 10, "the second to queue")
        with server.http() as http:
            r = http.post("/v1/chat/completions", json=LONG)
        assert r.status_code == 429
        assert int(r.headers["Retry-After"]) >= 1
        assert r.json()["error"]["type"] == "rate_limit_error"
        with pytest.raises(openai.RateLimitError):
            server.client().chat.completions.create(
                model=MODEL,
                messages=LONG["messages"],  # type: ignore[arg-type]
                max_tokens=10,
            )
        stop.set()
        for t in holders:
            t.join(timeout=30)
        # the queued request was not lost: it ran (and was cancelled when its client left)
        wait_for(
            lambda: engine.scheduler.running == 0 and engine.scheduler.queue_depth == 0,
            10,
            "the queue to drain",
        )
        assert metric_value(server, "edgellm_requests_total", model=MODEL, status="429") == 2
    finally:
        server.stop()


def test_next_turn_reuses_the_conversation_prefix(smol_client: openai.OpenAI) -> None:
    history = [{"role": "user", "content": "Give me a fruit name."}]
    first = smol_client.chat.completions.create(
        model=MODEL,
        messages=history,
        temperature=0,
        max_tokens=30,  # type: ignore[arg-type]
    )
    history += [
        {"role": "assistant", "content": first.choices[0].message.content or ""},
        {"role": "user", "content": "And a vegetable?"},
    ]
    second = smol_client.chat.completions.create(
        model=MODEL,
        messages=history,
        temperature=0,
        max_tokens=30,  # type: ignore[arg-type]
    )
    t = second.model_extra["timings"]  # type: ignore[index]
    assert first.usage is not None and second.usage is not None
    assert t["cache_n"] >= first.usage.prompt_tokens
    assert t["prompt_n"] == second.usage.prompt_tokens - t["cache_n"]
    assert t["prompt_n"] < second.usage.prompt_tokens - first.usage.prompt_tokens + 8
    assert second.usage.prompt_tokens_details is not None
    assert second.usage.prompt_tokens_details.cached_tokens == t["cache_n"]


def test_health_is_503_while_loading(model_paths: dict[str, Path]) -> None:
    release = threading.Event()

    def slow_resolve(source: str) -> Path:
        release.wait(30)
        return model_paths[source]

    from edgellm.api.app import create_app
    from edgellm.engine.pool import EnginePool

    pool = EnginePool([ModelConfig(name=MODEL, source=MODEL)], resolve=slow_resolve)
    import uvicorn

    from tests.integration.servers import free_port

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(pool), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 30, "uvicorn")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            r = http.get("/health")
            assert r.status_code == 503 and r.json()["status"] == "loading"
            r = http.post(
                "/v1/chat/completions",
                json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]},
            )
            assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready"
            release.set()
            wait_for(lambda: http.get("/health").status_code == 200, 60, "ready")
    finally:
        release.set()
        server.should_exit = True
        thread.join(timeout=30)


def test_metrics_parse_and_count(smol_server: RunningServer, smol_client: openai.OpenAI) -> None:
    smol_client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=4,  # type: ignore[arg-type]
    )
    with smol_server.http() as http:
        text = http.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in (
        "edgellm_requests",
        "edgellm_prompt_tokens",
        "edgellm_generation_tokens",
        "edgellm_time_to_first_token_seconds",
        "edgellm_e2e_request_latency_seconds",
        "edgellm_decode_tokens_per_second",
        "edgellm_queue_wait_seconds",
        "edgellm_queue_depth",
        "edgellm_process_cpu_percent",
        "edgellm_process_resident_memory_bytes",
    ):
        assert name in families, name
    ok = [
        s
        for s in families["edgellm_requests"].samples
        if s.name == "edgellm_requests_total"
        and s.labels["status"] == "200"
        and s.labels["endpoint"] == "/v1/chat/completions"
    ]
    assert ok and ok[0].value >= 1
    rss = families["edgellm_process_resident_memory_bytes"].samples[0].value
    assert rss > 50 * 1024 * 1024  # the model is mapped and touched
    ttft_count = [
        s.value
        for s in families["edgellm_time_to_first_token_seconds"].samples
        if s.name.endswith("_count")
    ]
    assert ttft_count and ttft_count[0] >= 1


def _series(server: RunningServer) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    with server.http() as http:
        text = http.get("/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items())))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_random_model_names_add_no_time_series(smol_server: RunningServer) -> None:
    bodies = [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/completions", {"prompt": "hi"}),
        ("/v1/loglikelihood", {"items": [{"context": "a", "continuation": "b"}]}),
        ("/tokenize", {"content": "hi"}),
    ]
    with smol_server.http() as http:

        def send(n: int) -> None:
            for path, body in bodies:
                r = http.post(path, json=body | {"model": f"no-such-model-{n}-{path}"})
                assert r.status_code == 404

        send(0)  # the first unknown name may add the `unknown` series
        before = _series(smol_server)
        for n in range(1, 60):
            send(n)
    after = _series(smol_server)
    assert after == before
    names = {dict(labels).get("model") for _, labels in after}
    assert "unknown" in names
    assert not any(str(n).startswith("no-such-model") for n in names)


def test_model_cards_show_no_server_paths(smol_client: openai.OpenAI) -> None:
    meta = smol_client.models.list().data[0].model_extra["meta"]  # type: ignore[index]
    assert meta["file"].endswith(".gguf") and "/" not in meta["file"]
    assert not any("/" in str(v) for v in meta.values() if isinstance(v, str))


def test_logit_bias_steers_greedy_and_sampled_decoding(smol_server: RunningServer) -> None:
    with smol_server.http() as http:
        (banana,) = http.post("/tokenize", json={"content": " banana"}).json()["tokens"]
        prompt = {"model": MODEL, "prompt": "The capital of France is", "max_tokens": 3}

        def tokens(**extra: object) -> list[int]:
            r = http.post("/v1/completions", json=prompt | extra)
            assert r.status_code == 200, r.text
            text = r.json()["choices"][0]["text"]
            return list(http.post("/tokenize", json={"content": text}).json()["tokens"])

        plain = tokens(temperature=0)
        assert plain and plain[0] != banana
        assert tokens(temperature=0, logit_bias={str(banana): 100}) == [banana] * 3
        # -100 bans the greedy choice: another token comes first
        assert tokens(temperature=0, logit_bias={str(plain[0]): -100})[0] != plain[0]
        sampled = tokens(temperature=1.0, seed=7, logit_bias={str(banana): 100})
        assert sampled == [banana] * 3
        assert tokens(temperature=1.0, seed=7) != sampled
