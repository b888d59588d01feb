"""What writing an answer costs: EdgeLLM's renderer (dicts encoded by orjson) against the same
JSON built as the pydantic response models and dumped by them (the renderer before 2026-11-22),
in the same process, on the same events.

Three objects: a streamed chat chunk with one token (sent once per generated token by every node
and gateway), the same with its log-prob and 5 alternatives, and a whole chat answer with its
`route` object (the gateway's non-streamed answer). Per object: microseconds per render (the
best of --repeats timings of --number renders each, pinned to one CPU) and the ratio
reference / EdgeLLM. Both sides must produce the same JSON (checked first).

    .venv/bin/python benchmarks/render.py [--number 20000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import timeit
from collections.abc import Callable
from typing import Any

from common import machine_line
from edgellm.engine.types import (
    Finished,
    FinishReason,
    TextDelta,
    Timings,
    TokenLogprob,
    TopLogprob,
)
from edgellm.wire import encode as render
from edgellm.wire.schemas import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatDelta,
    ChatLogprobs,
    ChatTokenLogprob,
    TopLogprobOut,
    Usage,
)

IDS = render.ResponseIds(model="smollm2-135m-instruct", id="chatcmpl-" + "0" * 32, created=1)
TOP = tuple(
    TopLogprob(token=f" tok{i}", token_id=i, logprob=-0.5 - i, bytes=f" tok{i}".encode())
    for i in range(5)
)
LP = TokenLogprob(token=" Hello", token_id=9, logprob=-0.125, bytes=b" Hello", top=TOP)
DONE = Finished(
    reason=FinishReason.STOP,
    prompt_tokens=31,
    completion_tokens=5,
    timings=Timings(
        queue_ms=0.2, ttft_ms=80.5, prompt_n=31, prompt_ms=78.1, predicted_n=5, predicted_ms=40.2
    ),
)
ROUTE = {
    "policy": None,
    "model": "smollm2-135m-instruct",
    "tier": "edge-small",
    "replica": "http://10.0.0.5:8080/v1",
    "signals": {},
    "scores": {},
    "threshold": None,
    "escalations": [],
    "fallbacks": 0,
    "hops": [{"model": "smollm2-135m-instruct", "replica": "http://10.0.0.5:8080/v1",
              "outcome": "ok", "ms": 121.3, "first_event_ms": 121.2}],
}  # fmt: skip
HEAD = {"id": IDS.id, "created": IDS.created, "model": IDS.model}


def _pydantic_chunk(with_logprobs: bool) -> bytes:
    logprobs = None
    if with_logprobs:
        top = [TopLogprobOut(token=t.token, logprob=t.logprob, bytes=list(t.bytes)) for t in TOP]
        token = ChatTokenLogprob(
            token=LP.token, logprob=LP.logprob, bytes=list(LP.bytes), top_logprobs=top
        )
        logprobs = ChatLogprobs(content=[token])
    chunk = ChatCompletionChunk(
        **HEAD,
        system_fingerprint=render.SYSTEM_FINGERPRINT,
        choices=[ChatChunkChoice(delta=ChatDelta(content=" Hello"), logprobs=logprobs)],
    )
    return render.sse(chunk.model_dump_json(exclude={"usage", "timings", "route"}))


def _edgellm_chunk(with_logprobs: bool) -> bytes:
    logprobs = render.chat_logprobs([LP]) if with_logprobs else None
    return render.chat_chunk(IDS, content=" Hello", logprobs=logprobs)


def _collected() -> render.Collected:
    got = render.Collected()
    got.add(TextDelta(text="Hello from the edge.", token_ids=()))
    return got


def _pydantic_answer() -> bytes:
    got = _collected()
    answer = ChatCompletion(
        **HEAD,
        system_fingerprint=render.SYSTEM_FINGERPRINT,
        choices=[ChatChoice(message=AssistantMessage(content=got.text), finish_reason="stop")],
        usage=Usage(**render.usage_of(DONE)),
        timings=DONE.timings.as_dict(),
        route=ROUTE,
    )
    return answer.model_dump_json().encode()


def _edgellm_answer() -> bytes:
    return render.chat_completion(IDS, _collected(), DONE, with_logprobs=False, route=ROUTE)


def _best_us(fn: Callable[[], Any], number: int, repeats: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeats)) / number * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--number", type=int, default=20000, help="renders per timing")
    ap.add_argument("--repeats", type=int, default=5, help="timings per object (best is kept)")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    cases: list[tuple[str, Callable[[], bytes], Callable[[], bytes]]] = [
        ("chat chunk, 1 token", lambda: _pydantic_chunk(False), lambda: _edgellm_chunk(False)),
        ("chunk + logprobs (top 5)", lambda: _pydantic_chunk(True), lambda: _edgellm_chunk(True)),
        ("whole chat answer + route", _pydantic_answer, _edgellm_answer),
    ]  # fmt: skip
    print(machine_line())
    print("| object | pydantic models (us) | EdgeLLM renderer (us) | ratio |")
    print("| --- | --- | --- | --- |")
    for name, reference, ours in cases:
        ref_json, our_json = reference(), ours()
        strip = (lambda b: b[6:-2]) if ref_json.startswith(b"data: ") else (lambda b: b)
        if json.loads(strip(ref_json)) != json.loads(strip(our_json)):
            print(f"{name}: the two renderers disagree", file=sys.stderr)
            return 1
        ref_us = _best_us(reference, args.number, args.repeats)
        our_us = _best_us(ours, args.number, args.repeats)
        print(f"| {name} | {ref_us:.2f} | {our_us:.2f} | {ref_us / our_us:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
