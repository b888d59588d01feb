"""The real command line: `edgellm node` and `edgellm serve` as processes, `edgellm chat`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from typer.testing import CliRunner

from edgellm.cli import app
from tests.integration.servers import free_port

pytestmark = pytest.mark.integration


def spawn(args: list[str], port: int) -> subprocess.Popen[bytes]:
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgellm", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    deadline = time.monotonic() + 120
    with httpx.Client(timeout=2) as http:
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            try:
                if http.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    return proc
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("server did not become healthy")


def stop(proc: subprocess.Popen[bytes]) -> bool:
    """SIGTERM; True if the server shut down by itself (uvicorn re-raises the signal after its
    graceful shutdown, so -SIGTERM is a clean exit too)."""
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=30) in {0, -signal.SIGTERM}


@pytest.fixture(scope="module")
def serve_process() -> Iterator[str]:
    """`edgellm serve` with its default configuration: both bundled models."""
    port = free_port()
    proc = spawn(["serve", "--port", str(port), "--log-level", "warning"], port)
    yield f"http://127.0.0.1:{port}/v1"
    assert stop(proc)


@pytest.mark.parametrize("model", ["smollm2-135m-instruct", "gemma3-270m"])
def test_serve_streams_from_each_bundled_model(serve_process: str, model: str) -> None:
    client = openai.OpenAI(base_url=serve_process, api_key="unused", max_retries=0)
    assert {m.id for m in client.models.list().data} == {"smollm2-135m-instruct", "gemma3-270m"}
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert all(c.model == model for c in chunks)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_node_serves_a_local_gguf_path(model_paths: dict[str, Path]) -> None:
    port = free_port()
    path = model_paths["smollm2-135m-instruct"]
    proc = spawn(
        [
            "node",
            "--model",
            str(path),
            "--name",
            "smol",
            "--port",
            str(port),
            "--threads",
            "2",
            "--ctx",
            "1024",
            "--log-level",
            "warning",
        ],
        port,
    )
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["smol"]
        r = client.completions.create(model="smol", prompt="Once upon a time", max_tokens=5)
        assert r.usage is not None and r.usage.completion_tokens >= 1
    finally:
        assert stop(proc)


def test_node_with_a_missing_model_fails_health_clearly() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgellm",
            "node",
            "--model",
            "/nonexistent/model.gguf",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        body: dict[str, object] = {}
        with httpx.Client(timeout=2) as http:
            while time.monotonic() < deadline:
                try:
                    r = http.get(f"http://127.0.0.1:{port}/health")
                    body = r.json()
                    if body.get("status") == "failed":
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        assert r.status_code == 503
        assert body["status"] == "failed"
        # the operator reads the reason in the log; clients never see server paths
        assert "loading failed" in str(body["error"])
        assert "/nonexistent" not in r.text
    finally:
        stop(proc)
    assert proc.stdout is not None
    assert b"/nonexistent/model.gguf" in proc.stdout.read()


def test_chat_once_streams_and_reports_speed(serve_process: str) -> None:
    result = CliRunner().invoke(
        app,
        [
            "chat",
            "--url",
            serve_process,
            "--model",
            "smollm2-135m-instruct",
            "--temperature",
            "0",
            "--max-tokens",
            "16",
            "--once",
            "Say hello.",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "tok/s" in result.output
    assert "TTFT" in result.output


def test_chat_reports_unreachable_server() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    result = CliRunner().invoke(app, ["chat", "--url", url, "--once", "hi"])
    assert result.exit_code == 1
    assert "cannot reach" in result.output
