"""Servers and case shaping for the schemathesis runs (tests/integration/test_fuzz.py, and the
long run in benchmarks/fuzz.py, which runs that module with more cases).

Both servers are real processes: a C++ exception inside llama.cpp ends the process it is
thrown in, which must be the server (its log then tells what happened), not the test runner.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from edgellm.gateway.auth import hash_key
from tests.integration.servers import free_port

NODE_MODEL = "smollm2-135m-instruct"
SMALLEST_VOCAB = 49152  # SmolLM2's; token ids below it are valid for every bundled model
API_KEY = "fuzz-key-0123456789"
GENERATION = ("/v1/chat/completions", "/v1/completions", "/v1/loglikelihood")
OPEN_PATHS = ("/health", "/metrics")  # answered without an API key

MAX_TOKENS = 4  # generation stays quick: the cases are about the input, not long answers
MAX_MESSAGES = 8
MAX_ITEMS = 4  # /v1/loglikelihood items scored per case
MAX_CHARS = 100  # of each scored text (exotic characters are several tokens each)


@dataclass
class Server:
    """A server process on loopback, its log kept in a file (a crash's last words)."""

    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    key: str | None = None
    # the names `model` is mapped to: generation also takes policies, the rest only models
    models: list[str] = field(default_factory=list)
    routable: list[str] = field(default_factory=list)
    # (path, status) of every case; of those sent with a valid key (all, without keys); of the
    # valid bodies among those
    outcomes: Counter[tuple[str, int]] = field(default_factory=Counter)
    keyed: Counter[tuple[str, int]] = field(default_factory=Counter)
    positive: Counter[tuple[str, int]] = field(default_factory=Counter)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def health(self) -> int:
        with httpx.Client(timeout=10) as http:
            return http.get(f"{self.url}/health").status_code

    def stop(self) -> int | None:
        """SIGTERM, then the exit code (None if it had to be killed)."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def summary(self) -> dict[str, Any]:
        def generation(c: Counter[tuple[str, int]]) -> tuple[int, int]:
            total = sum(n for (path, _), n in c.items() if path in GENERATION)
            ok = sum(n for (path, status), n in c.items() if path in GENERATION and status == 200)
            return ok, total

        ok, total = generation(self.keyed)
        pos_ok, pos_total = generation(self.positive)
        by_status: Counter[int] = Counter()
        by_path: dict[str, dict[str, int]] = {}
        for (path, status), n in sorted(self.outcomes.items()):
            by_status[status] += n
            by_path.setdefault(path, {})[str(status)] = n
        return {
            "server": self.name,
            "cases": sum(self.outcomes.values()),
            "cases_without_key": sum(self.outcomes.values()) - sum(self.keyed.values()),
            "generation_cases": total,
            "generation_200": ok,
            "generation_200_fraction": ok / total if total else 0.0,
            "positive_generation_cases": pos_total,
            "positive_generation_200": pos_ok,
            "statuses": {str(s): n for s, n in sorted(by_status.items())},
            "by_path": by_path,
        }


def spawn(name: str, args: list[str], port: int, log: Path) -> Server:
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgellm", *args, "--port", str(port), "--log-level", "warning"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=os.environ | {"PYTHONUNBUFFERED": "1"},
        )
    server = Server(name, url, proc, log)
    deadline = time.monotonic() + 180
    with httpx.Client(timeout=2) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited while starting:\n{server.log_tail()}")
            try:
                if http.get(f"{url}/health").status_code == 200:
                    return server
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"{name} did not become healthy:\n{server.log_tail()}")


def start_node(workdir: Path) -> Server:
    port = free_port()
    args = ["node", "--model", NODE_MODEL, "--ctx", "1024", "--parallel", "2", "--threads", "1"]
    node = spawn("node", args, port, workdir / "node.log")
    node.models = node.routable = [NODE_MODEL]
    return node


def gateway_config(node: Server) -> dict[str, Any]:
    """Both bundled models in process, the node as a remote model, a cascade over all three,
    and one API key with limits no fuzz run reaches."""
    # one thread each: on a busy machine, llama.cpp's threads waiting for each other cost more
    # than the second core gains
    engine = {"n_ctx": 1024, "n_threads": 1}
    return {
        "models": [
            {"name": NODE_MODEL, "source": NODE_MODEL, "tier": "edge-small", "aliases": ["small"]}
            | {"engine": engine},
            {"name": "gemma3-270m", "source": "gemma3-270m", "tier": "edge-large"}
            | {"engine": engine},
        ],
        "remote_models": [
            {
                "name": "edge-node",
                "tier": "cloud",
                "context_length": 1024,
                "backends": [{"url": f"{node.url}/v1", "model": NODE_MODEL}],
            }
        ],
        "policies": [
            {"name": "auto", "kind": "rules"},
            {
                "name": "cascade",
                "kind": "cascade",
                "models": [NODE_MODEL, "gemma3-270m", "edge-node"],
                "threshold": -1.2,
                "early_abort_tokens": 4,
            },
        ],
        "auth": {
            "keys": [
                {
                    "name": "fuzz",
                    "sha256": hash_key(API_KEY),
                    "requests_per_minute": 1e6,
                    "burst": 100000,
                }
            ]
        },
    }


def start_gateway(workdir: Path, node: Server) -> Server:
    config = workdir / "gateway.yaml"
    config.write_text(yaml.safe_dump(gateway_config(node)))
    gateway = spawn("gateway", ["serve", "--config", str(config)], free_port(), workdir / "gw.log")
    gateway.key = API_KEY
    with httpx.Client(base_url=gateway.url, headers=gateway.headers(), timeout=10) as http:
        cards = http.get("/v1/models").json()["data"]
        policies = list(http.get("/v1/router").json()["policies"])
    gateway.models = [c["id"] for c in cards] + [a for c in cards for a in c["meta"]["aliases"]]
    gateway.routable = gateway.models + policies
    return gateway


def _crc(value: object) -> int:
    return zlib.crc32(json.dumps(value, sort_keys=True, default=str).encode())


def _small_count(value: object, h: int) -> object:
    """A non-negative int becomes at most MAX_TOKENS; an absent or null one is set; anything
    else (a negative case's wrong type or negative value) is left for the server to reject."""
    if value is None:
        return 1 + h % MAX_TOKENS
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value % (MAX_TOKENS + 1)
    return value


def _token_ids(value: object, h: int) -> object:
    """Three lists of ids in four are brought inside the vocabulary (to reach the model); the
    fourth is left as drawn, for the range check."""
    if not isinstance(value, list) or h % 4 == 0:
        return value
    return [
        abs(t) % SMALLEST_VOCAB if isinstance(t, int) and not isinstance(t, bool) else t
        for t in value
    ]


def _embedding_input(value: object, h: int, *, positive: bool) -> object:
    """Token ids brought inside the vocabulary as for prompts (one list in four left as drawn);
    a valid body's inputs cut to MAX_ITEMS inputs of MAX_CHARS characters or tokens, so that a
    case embeds in well under a second."""
    if not isinstance(value, list):
        return value[:MAX_CHARS] if positive and isinstance(value, str) else value
    if value and all(isinstance(v, list) for v in value):
        value = [_token_ids(v, h) for v in value]
    else:
        value = _token_ids(value, h)
    if not positive or not isinstance(value, list):
        return value
    if value and isinstance(value[0], int):  # one token array
        return value[:MAX_CHARS]
    return [v[:MAX_CHARS] if isinstance(v, str | list) else v for v in value[:MAX_ITEMS]]


def shape_body(path: str, body: dict[str, Any], server: Server, *, positive: bool) -> None:
    """Make a drawn body likely to reach the engine while keeping what makes it a test: the
    model named is a served one for nine bodies in ten (the tenth keeps its random name, for
    the 404), counts are small, and valid bodies hold few messages, items and characters."""
    h = _crc(body)
    model = body.get("model")
    if isinstance(model, str) and model and h % 10:  # "" is a negative case's violation
        names = server.routable if path in GENERATION[:2] else server.models
        body["model"] = names[h % len(names)]
    if path in GENERATION[:2]:
        body["max_tokens"] = _small_count(body.get("max_tokens"), h)
        # one history per case: a shared id's history would grow to the whole window, and
        # every later case would prefill all of it
        if isinstance(body.get("conversation_id"), str) and body["conversation_id"]:
            body["conversation_id"] = f"c{h}"
        if "max_completion_tokens" in body:
            body["max_completion_tokens"] = _small_count(body["max_completion_tokens"], h)
    if path == "/v1/completions":
        prompt = body.get("prompt")
        if isinstance(prompt, list) and prompt and all(isinstance(p, list) for p in prompt):
            body["prompt"] = [_token_ids(p, h) for p in prompt]  # lm-eval's [[ids]]
        else:
            body["prompt"] = _token_ids(prompt, h)
    elif path == "/detokenize":
        body["tokens"] = _token_ids(body.get("tokens"), h)
    elif path == "/v1/embeddings":
        body["input"] = _embedding_input(body.get("input"), h, positive=positive)
    if positive and path in GENERATION[:2] and h % 4:
        # a grammar, JSON schema or tool parameters drawn at random almost never compile (a
        # 400): three valid bodies in four go without them, to reach the model; the fourth
        # tests the refusal
        for key in ("grammar", "json_schema", "tools", "tool_choice"):
            body.pop(key, None)
        fmt = body.get("response_format")
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            body.pop("response_format")
    if positive and path == GENERATION[0]:
        # the schema cannot say that only an assistant has tool calls and a tool message
        # names its call (the negative cases and the tool-call tests cover those 400s)
        for message in body.get("messages") or ():
            if isinstance(message, dict):
                if message.get("role") != "assistant":
                    message.pop("tool_calls", None)
                if message.get("role") == "tool" and not message.get("tool_call_id"):
                    message["tool_call_id"] = "call_0"
    if positive:
        for key, cap in (("messages", MAX_MESSAGES), ("items", MAX_ITEMS)):
            if isinstance(body.get(key), list):
                body[key] = body[key][:cap]
        for item in body.get("items") or ():
            for key in ("context", "continuation"):
                if isinstance(item, dict) and isinstance(item.get(key), str):
                    item[key] = item[key][:MAX_CHARS]


def with_key(server: Server, case_body: object, path: str) -> bool:
    """Whether this case is sent with the API key (if the server has keys): nine in ten are
    (decided by the body, so a failing case replays the same)."""
    return server.key is None or _crc([path, case_body]) % 10 != 0


def record(summary: dict[str, Any]) -> None:
    """Append a run's figures to $EDGELLM_FUZZ_REPORT (JSON lines), for benchmarks/fuzz.py."""
    path = os.environ.get("EDGELLM_FUZZ_REPORT")
    if path:
        with Path(path).open("a") as out:
            out.write(json.dumps(summary) + "\n")
