"""Helpers shared by the benchmark scripts: start servers, stream completions, summarize."""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import subprocess
import time
from dataclasses import dataclass, field

import httpx

from edgellm.config import EngineConfig
from edgellm.deploy.launch import node_command, served_model
from edgellm.reference import require_tool


def machine_line() -> str:
    return f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}"


def wait_healthy(proc: subprocess.Popen[bytes], url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2) as http:
        while time.monotonic() < deadline:
            try:
                if http.get(f"{url}/health").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            time.sleep(0.2)
    proc.terminate()
    raise RuntimeError(f"{url} did not become healthy")


def start_edgellm_node(
    model: str,
    *,
    threads: int,
    port: int,
    parallel: int = 1,
    ctx: int = 2048,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    engine = EngineConfig(n_threads=threads, n_ctx=ctx, parallel=parallel)
    cmd = node_command(served_model(model, engine=engine), port=port)
    proc = subprocess.Popen(cmd, env=env)
    wait_healthy(proc, f"http://127.0.0.1:{port}")
    return proc


def start_llama_server(
    model_path: str, *, threads: int, port: int, parallel: int, ctx: int
) -> subprocess.Popen[bytes]:
    cmd = [
        str(require_tool("llama-server")), "-m", model_path, "--host", "127.0.0.1",
        "--port", str(port), "-t", str(threads), "-c", str(ctx), "--parallel", str(parallel),
        "--no-webui",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_healthy(proc, f"http://127.0.0.1:{port}")
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


@dataclass
class StreamResult:
    started: float
    arrivals: list[float] = field(default_factory=list)  # one per content chunk
    usage: dict[str, int] | None = None
    timings: dict[str, float] | None = None
    text: str = ""
    first_choice: float | None = None  # the first chunk with a choice, even one without text

    @property
    def ttft(self) -> float:
        """Until the first text; a stream whose tokens had no text (a control token when
        `ignore_eos` is set) counts its first chunk."""
        if self.arrivals:
            return self.arrivals[0] - self.started
        if self.first_choice is None:
            raise ValueError("the stream produced no token")
        return self.first_choice - self.started

    def itls(self) -> list[float]:
        return [b - a for a, b in zip(self.arrivals, self.arrivals[1:], strict=False)]


def stream(
    http: httpx.Client,
    path: str,
    body: dict[str, object],
) -> StreamResult:
    """POST a streaming request; record when each content chunk arrives."""
    body = body | {"stream": True, "stream_options": {"include_usage": True}}
    result = StreamResult(started=time.perf_counter())
    with http.stream("POST", path, json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                result.usage = chunk["usage"]
            if chunk.get("timings"):
                result.timings = chunk["timings"]
            for choice in chunk.get("choices") or []:
                if result.first_choice is None:
                    result.first_choice = time.perf_counter()
                text = choice.get("text")
                if text is None:
                    text = (choice.get("delta") or {}).get("content")
                if text:
                    result.arrivals.append(time.perf_counter())
                    result.text += text
    return result


def random_prompt(rng: random.Random, vocab: int, n: int) -> list[int]:
    return [rng.randrange(100, vocab) for _ in range(n)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def median(values: list[float]) -> float:
    return statistics.median(values)


def rounds(values: list[float]) -> str:
    return "/".join(f"{v:.0f}" for v in values)
