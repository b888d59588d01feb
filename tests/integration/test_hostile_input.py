"""Values that llama.cpp would abort on never reach it: each gets a 400/422 naming the parameter,
and the node process (a real `edgellm node`, serial and batching) keeps serving.

The node runs as a subprocess: a C++ exception inside llama.cpp terminates the process it runs
in, and here that must be the server, not the test runner.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.servers import free_port

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m-instruct"
N_VOCAB = 49152  # SmolLM2's vocabulary
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}


@pytest.fixture(scope="module", params=[1, 2], ids=["serial", "parallel2"])
def node(request: pytest.FixtureRequest) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    args = ["node", "--model", MODEL, "--port", str(port), "--ctx", "512"]
    args += ["--parallel", str(request.param), "--log-level", "warning"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgellm", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        with httpx.Client(timeout=2) as http:
            while time.monotonic() < deadline:
                assert proc.poll() is None, "the node exited while loading"
                try:
                    if http.get(f"{url}/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            else:
                raise AssertionError("the node did not become healthy")
        yield url, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _post(url: str, path: str, body: object) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=60) as http:
        if isinstance(body, bytes):
            return http.post(path, content=body, headers={"content-type": "application/json"})
        return http.post(path, json=body)


def _error(r: httpx.Response) -> dict[str, object]:
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert isinstance(err, dict)
    return err


HOSTILE = [
    # (path, body, status, param)
    ("/detokenize", {"tokens": [-4415]}, 400, "tokens"),
    ("/detokenize", {"tokens": [N_VOCAB]}, 400, "tokens"),
    ("/detokenize", {"tokens": [1, 2, 2**63 + 5]}, 400, "tokens"),
    ("/v1/completions", {"model": MODEL, "prompt": [-1], "max_tokens": 2}, 400, "prompt"),
    ("/v1/completions", {"model": MODEL, "prompt": [1, N_VOCAB], "max_tokens": 2}, 400, "prompt"),
    ("/v1/chat/completions", CHAT | {"logit_bias": {"-1": 5}}, 422, "logit_bias"),
    ("/v1/chat/completions", CHAT | {"logit_bias": {str(N_VOCAB): 5}}, 400, "logit_bias"),
    ("/v1/chat/completions", CHAT | {"logit_bias": {"4294967295": 1}}, 400, "logit_bias"),
    ("/v1/chat/completions", CHAT | {"logit_bias": {"9" * 5000: 1}}, 422, "logit_bias"),
    ("/v1/chat/completions", CHAT | {"logit_bias": {"a": 1}}, 422, "logit_bias"),
    ("/v1/chat/completions", CHAT | {"logit_bias": {"5": 101}}, 422, "logit_bias"),
    (
        "/v1/completions",
        {"model": MODEL, "prompt": "Hi", "max_tokens": 2, "logit_bias": {str(N_VOCAB + 7): -100}},
        400,
        "logit_bias",
    ),
    # texts that cannot fit the 512-token window are refused before the tokenizer sees them
    ("/tokenize", {"content": " " * 3_000_000}, 400, "content"),
    ("/v1/completions", {"model": MODEL, "prompt": "a" * 3_000_000}, 400, "prompt"),
    (
        "/v1/chat/completions",
        CHAT | {"messages": [{"role": "user", "content": "\n" * 1_500_000}]},
        400,
        "messages",
    ),
    (
        "/v1/loglikelihood",
        {"model": MODEL, "items": [{"context": "x " * 1_000_000, "continuation": "y"}]},
        400,
        "items",
    ),
    ("/v1/chat/completions", CHAT | {"top_k": 2**40}, 422, "top_k"),
    # a float32 0: the penalised logits were NaN, the draw fell on a token the grammar forbids
    # and llama.cpp aborted the process (found by the long fuzz run)
    (
        "/v1/chat/completions",
        CHAT | {"repeat_penalty": 5e-324, "response_format": {"type": "json_object"}},
        422,
        "repeat_penalty",
    ),
    ("/v1/chat/completions", CHAT | {"top_logprobs": 21, "logprobs": True}, 422, "top_logprobs"),
    (
        "/v1/chat/completions",
        b'{"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "x"}],'
        b' "temperature": NaN}',
        422,
        "temperature",
    ),
    (
        "/v1/chat/completions",
        b'{"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "x"}],'
        b' "logit_bias": {"5": Infinity}}',
        422,
        "logit_bias",
    ),
]


@pytest.mark.parametrize(("path", "body", "status", "param"), HOSTILE)
def test_hostile_values_are_rejected_naming_the_parameter(
    node: tuple[str, subprocess.Popen[bytes]],
    path: str,
    body: object,
    status: int,
    param: str,
) -> None:
    url, proc = node
    r = _post(url, path, body)
    assert r.status_code == status, r.text
    err = _error(r)
    assert str(err["param"]).split(".")[0] == param
    assert proc.poll() is None
    with httpx.Client(base_url=url, timeout=30) as http:
        assert http.get("/health").status_code == 200


def test_the_node_still_answers_after_every_hostile_request(
    node: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, proc = node
    for path, body, _, _ in HOSTILE:
        _post(url, path, body)
    assert proc.poll() is None
    r = _post(url, "/v1/chat/completions", CHAT | {"temperature": 0})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
    assert _post(url, "/detokenize", {"tokens": [0, N_VOCAB - 1]}).status_code == 200


def test_extreme_seeds_are_accepted(node: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, _ = node
    for seed in (-1, 2**32, 2**70):
        r = _post(url, "/v1/chat/completions", CHAT | {"seed": seed, "temperature": 1.0})
        assert r.status_code == 200, r.text


def test_a_vanishing_temperature_decodes_greedily(
    node: tuple[str, subprocess.Popen[bytes]],
) -> None:
    """Logits divided by 1e-45 overflow to NaN, and the draw fell on the vocabulary's last token
    (under a grammar, one it forbids: llama.cpp aborted). Below 1e-5 it is greedy decoding."""
    url, proc = node
    json_chat = CHAT | {"response_format": {"type": "json_object"}, "max_tokens": 24, "seed": 3}
    greedy = _post(url, "/v1/chat/completions", json_chat | {"temperature": 0})
    assert greedy.status_code == 200, greedy.text
    for t in (1e-45, 1e-30, 9e-6):
        r = _post(url, "/v1/chat/completions", json_chat | {"temperature": t})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"] == greedy.json()["choices"][0]["message"]
    # the control: a real temperature samples (another text for some seed)
    sampled = [
        _post(url, "/v1/chat/completions", json_chat | {"temperature": 1.2, "seed": s}).json()
        for s in range(3)
    ]
    greedy_text = greedy.json()["choices"][0]["message"]["content"]
    assert any(a["choices"][0]["message"]["content"] != greedy_text for a in sampled)
    assert proc.poll() is None
