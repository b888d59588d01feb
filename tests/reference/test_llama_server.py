"""Our node server next to upstream llama-server (built by `make reference`) on the same model.

Greedy decoding is deterministic, so both servers must produce the same text for the same
prompt: a check of our tokenization, chat template rendering, sampling and stop handling against
llama.cpp's own server.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edgellm.reference import find_tool
from tests.integration.servers import RunningServer, free_port, smollm2_config, start_server

LLAMA_SERVER = find_tool("llama-server")
pytestmark = [
    pytest.mark.reference,
    pytest.mark.skipif(
        LLAMA_SERVER is None, reason="upstream llama-server not built: run `make reference`"
    ),
]

MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def llama_server(model_paths: dict[str, Path]) -> Iterator[str]:
    assert LLAMA_SERVER is not None
    port = free_port()
    proc = subprocess.Popen(
        [
            str(LLAMA_SERVER),
            "-m",
            str(model_paths[MODEL]),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "-t",
            "2",
            "-c",
            "2048",
            "--parallel",
            "1",
            "--no-webui",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(timeout=2) as http:
            while True:
                assert proc.poll() is None, "llama-server exited"
                try:
                    if http.get(f"{url}/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "llama-server did not start"
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def ours() -> Iterator[RunningServer]:
    server = start_server([smollm2_config()])
    yield server
    server.stop()


def post(url: str, path: str, body: dict[str, object]) -> dict[str, object]:
    with httpx.Client(base_url=url, timeout=120) as http:
        r = http.post(path, json=body)
        r.raise_for_status()
        data: dict[str, object] = r.json()
        return data


@pytest.mark.parametrize(
    "prompt",
    ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village,"],
)
def test_greedy_completion_matches(llama_server: str, ours: RunningServer, prompt: str) -> None:
    body = {"model": MODEL, "prompt": prompt, "max_tokens": 40, "temperature": 0}
    theirs = post(llama_server, "/v1/completions", body)
    mine = post(ours.url, "/v1/completions", body)
    assert mine["choices"][0]["text"] == theirs["choices"][0]["text"]  # type: ignore[index]
    assert mine["usage"]["prompt_tokens"] == theirs["usage"]["prompt_tokens"]  # type: ignore[index]


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "Name three colours."}],
        [
            {"role": "system", "content": "You answer in one short sentence."},
            {"role": "user", "content": "What is an edge cluster?"},
        ],
    ],
)
def test_greedy_chat_matches(
    llama_server: str, ours: RunningServer, messages: list[dict[str, str]]
) -> None:
    body = {"model": MODEL, "messages": messages, "max_tokens": 48, "temperature": 0}
    theirs = post(llama_server, "/v1/chat/completions", body)
    mine = post(ours.url, "/v1/chat/completions", body)
    assert mine["usage"]["prompt_tokens"] == theirs["usage"]["prompt_tokens"]  # type: ignore[index]
    their_text = theirs["choices"][0]["message"]["content"]  # type: ignore[index]
    assert mine["choices"][0]["message"]["content"] == their_text  # type: ignore[index]
    assert mine["choices"][0]["finish_reason"] == theirs["choices"][0]["finish_reason"]  # type: ignore[index]


def test_timings_have_llama_server_fields(llama_server: str, ours: RunningServer) -> None:
    body = {"model": MODEL, "prompt": "Hello", "max_tokens": 8, "temperature": 0}
    theirs = post(llama_server, "/v1/completions", body)["timings"]
    mine = post(ours.url, "/v1/completions", body)["timings"]
    assert isinstance(theirs, dict) and isinstance(mine, dict)
    missing = set(theirs) - set(mine) - {"draft_n", "draft_n_accepted"}
    assert not missing
