"""The cascade when its cloud is down or slow: every answer, its TTFT and end-to-end time.

`edgellm serve` runs docs/gateway.example.yaml (both bundled models in-process, a `cloud` tier)
in a subprocess, with the `cascade` policy pointed at three clouds: one where nothing listens
(the issue's uplink down), one whose first token takes --slow-s (a fake), and one that answers
at once (a fake). Streamed requests, temperature 0, the issue's two prompts.

1. `cascade` of the example (threshold -1.2, early_abort_tokens 16) with the dead cloud, the
   client's default temperature (as in the issue): status, the model that answered, TTFT and
   end-to-end time of every request. Then the same policy with threshold 1.0 (every answer
   unsure, so every request escalates as far as it can), greedy, for 2-4.
2. Degraded answers, held (what the gateway does) against regenerated: a held answer's first
   byte goes out at the moment the escalation fails (TTFT_held), its rest as the held
   generation, which went on meanwhile, gets there. A regenerated one would start then:
   TTFT_held + the served model's own TTFT, TTFT_held + its own end-to-end time, both measured
   with the same body right after (its prompt cached, as a regeneration's would be).
3. The cost of holding when the higher tier does answer: the held small answer generates on
   while the next tier starts. Gemma in-process shares the CPU with it: its first token in an
   escalation (the route's hop) against its first token alone.
4. The escalation deadline with the slow cloud: each answer's TTFT, per deadline.

    .venv/bin/python benchmarks/cascade_degraded.py [--repeats 5] [--slow-s 3]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import yaml

from common import machine_line, median, stop, stream, wait_healthy
from edgellm.gateway.fake import FakeBackend, FakeBehaviour

ROOT = Path(__file__).resolve().parent.parent
SMALL, LARGE = "smollm2-135m-instruct", "gemma3-270m"
PROMPTS = ["Explain in one sentence why the sky is blue.", "What is 2+2?"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_fake(**behaviour: Any) -> tuple[str, uvicorn.Server]:
    port = free_port()
    app = FakeBackend(FakeBehaviour(**behaviour))
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return f"http://127.0.0.1:{port}/v1", server


def config(port: int, clouds: dict[str, str]) -> dict[str, Any]:
    cfg: dict[str, Any] = yaml.safe_load((ROOT / "docs/gateway.example.yaml").read_text())
    cfg["server"]["port"] = port
    template = cfg["remote_models"][0]
    cfg["remote_models"] = [
        template | {"name": name, "backends": [template["backends"][0] | {"url": url}]}
        for name, url in clouds.items()
    ]
    cascade = next(p for p in cfg["policies"] if p["name"] == "cascade")
    cascade.pop("escalation_deadline_s", None)  # each run below sets its own
    # the example's cascade, and the same with every answer unsure (threshold 1.0): each request
    # then escalates as far as it can
    climb = cascade | {"threshold": 1.0}
    cfg["policies"] = [
        *(cascade | {"name": f"cascade-{n}", "models": [SMALL, LARGE, n]} for n in clouds),
        *(climb | {"name": f"climb-{n}", "models": [SMALL, LARGE, n]} for n in clouds),
        climb | {"name": "climb-large", "models": [SMALL, LARGE]},
    ]
    return cfg


def body(model: str, prompt: str, **extra: Any) -> dict[str, Any]:
    """Greedy unless `temperature` is given (None: the client leaves it out, as the issue's)."""
    out = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 64,
        "temperature": 0,
    } | extra
    return {k: v for k, v in out.items() if v is not None}


def routed(http: httpx.Client, model: str, prompt: str, **extra: Any) -> dict[str, Any]:
    """One streamed request: its TTFT, end-to-end time, text and route."""
    b = body(model, prompt, **extra)
    t0 = time.perf_counter()
    route: dict[str, Any] = {}
    text, ttft, status = "", None, 0
    with http.stream("POST", "/v1/chat/completions", json=b | {"stream": True}) as r:
        status = r.status_code
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            route = chunk.get("route") or route
            for c in chunk.get("choices") or []:
                piece = (c.get("delta") or {}).get("content")
                if piece:
                    ttft = ttft if ttft is not None else time.perf_counter() - t0
                    text += piece
    return {
        "status": status,
        "ttft": ttft if ttft is not None else float("nan"),
        "e2e": time.perf_counter() - t0,
        "text": text,
        "route": route,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--slow-s", type=float, default=3.0)
    args = ap.parse_args()

    slow_url, slow = start_fake(reply=["cloud", " answer"], first_token_delay_s=args.slow_s)
    clouds = {"dead": f"http://127.0.0.1:{free_port()}/v1", "slow": slow_url}
    port = free_port()
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(config(port, clouds), f)
    env = os.environ | {"CLOUD_API_KEY": "unused"}
    cmd = [sys.executable, "-m", "edgellm", "serve", "--config", f.name]
    log = Path(f.name).with_suffix(".log")
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, url)
        with httpx.Client(base_url=url, timeout=120) as http:
            for p in PROMPTS:  # warm both models (first-run costs are not the subject)
                for m in (SMALL, LARGE):
                    stream(http, "/v1/chat/completions", body(m, p))
            print(machine_line())
            print(f"repeats: {args.repeats}, max_tokens 64, streamed\n")

            print("## 1. cascade of docs/gateway.example.yaml, cloud unreachable")
            print("(the client's default temperature, as in the issue)\n")
            print("| prompt | status | answered by | degraded | last escalation | TTFT s | e2e s |")
            print("| --- | --- | --- | --- | --- | --- | --- |")
            for _ in range(args.repeats):
                for p in PROMPTS:
                    got = routed(http, "cascade-dead", p, temperature=None)
                    route = got["route"]
                    esc = route.get("escalations") or [{}]
                    outcome = esc[-1].get("outcome", "-")
                    print(
                        f"| {p[:24]} | {got['status']} | {route.get('model')} | "
                        f"{route.get('degraded')} | {outcome} | {got['ttft']:.2f} | "
                        f"{got['e2e']:.2f} |"
                    )

            print("\n## 2. degraded answers (every answer unsure, greedy, cloud unreachable):")
            print("held (measured) against regenerated (derived)\n")
            ttft_h, e2e_h, ttft_r, e2e_r = [], [], [], []
            for _ in range(args.repeats):
                for p in PROMPTS:
                    got = routed(http, "climb-dead", p)
                    assert got["route"]["degraded"], got["route"]
                    alone = stream(http, "/v1/chat/completions", body(got["route"]["model"], p))
                    ttft_h.append(got["ttft"])
                    e2e_h.append(got["e2e"])
                    ttft_r.append(got["ttft"] + alone.ttft)
                    e2e_r.append(got["ttft"] + (alone.arrivals[-1] - alone.started))
            print("| approach | TTFT median s | e2e median s |")
            print("| --- | --- | --- |")
            print(f"| held (kept generating) | {median(ttft_h):.2f} | {median(e2e_h):.2f} |")
            print(f"| regenerated | {median(ttft_r):.2f} | {median(e2e_r):.2f} |")

            print("\n## 3. holding the small answer while gemma (in-process) starts")
            esc_ttft, alone_ttft = [], []
            for _ in range(args.repeats):
                for p in PROMPTS:
                    got = routed(http, "climb-large", p)
                    hop = next(h for h in got["route"]["hops"] if h["model"] == LARGE)
                    esc_ttft.append(hop["first_event_ms"] / 1e3)
                    alone_ttft.append(stream(http, "/v1/chat/completions", body(LARGE, p)).ttft)
            print(
                f"gemma's first token: {median(esc_ttft):.3f} s in an escalation (small held), "
                f"{median(alone_ttft):.3f} s alone (medians of {len(esc_ttft)})"
            )

            print(f"\n## 4. escalation deadline, cloud's first token after {args.slow_s} s")
            print("(every answer unsure, greedy)\n")
            print("| deadline s | answered by | TTFT median s | e2e median s |")
            print("| --- | --- | --- | --- |")
            for deadline in (0.5, 1.0, args.slow_s * 2):
                runs = [
                    routed(http, "climb-slow", p, escalation_deadline_s=deadline)
                    for _ in range(args.repeats)
                    for p in PROMPTS
                ]
                models = sorted({r["route"]["model"] for r in runs})
                print(
                    f"| {deadline:g} | {', '.join(models)} | "
                    f"{median([r['ttft'] for r in runs]):.2f} | "
                    f"{median([r['e2e'] for r in runs]):.2f} |"
                )
    finally:
        stop(proc)
        slow.should_exit = True
        os.unlink(f.name)
        print(f"\n(the gateway's log: {log})")


if __name__ == "__main__":
    main()
