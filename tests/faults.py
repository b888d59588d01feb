"""The node-killed-under-load scenario, one implementation for the two clusters that run it: the
emulated one (network namespaces, `tests/cluster/test_faults.py`) and the container one (podman,
`tests/container/test_cluster.py`). Clients send whole and streamed requests through the gateway,
one replica dies while a stream is on it, and every client's outcome is checked: no accepted
non-streamed request is lost (replayed on the survivor), a stream on the dead replica ends with
an error event (never silently), and requests started after the gateway marked the replica down
go to the survivor."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from edgellm.wire import decode


def chat_body(model: str, max_tokens: int, *, stream: bool = False) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "Count to ten."}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": stream,
    }


def replica_of(response: httpx.Response) -> str | None:
    """The replica named in the answer's `x-edgellm-route` header."""
    for part in response.headers.get("x-edgellm-route", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == "replica":
            return value
    return None


def wait_for(predicate: Callable[[], bool], timeout: float) -> float:
    """Seconds until `predicate` held, polling every 50 ms; fails after `timeout`. A gateway
    that does not answer yet, or does not list the replica yet, counts as not yet."""
    start = time.monotonic()
    while True:
        try:
            if predicate():
                return time.monotonic() - start
        except (httpx.HTTPError, KeyError):
            pass
        assert time.monotonic() - start < timeout, "condition not reached in time"
        time.sleep(0.05)


@dataclass
class Outcome:
    kind: str  # plain | stream
    started: float
    status: int
    replica: str | None
    result: str  # ok | error-event | broken | http-error | the body of a failed answer


def stream_outcome(
    client: httpx.Client,
    body: dict[str, Any],
    started: float,
    on_token: Callable[[str | None], None] = lambda replica: None,
) -> Outcome:
    """One streamed request: `ok` when it ended with a finish reason and `[DONE]`,
    `error-event` when an error event ended it, else `broken`."""
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            r.read()
            return Outcome("stream", started, r.status_code, None, "http-error")
        replica = replica_of(r)
        reader = decode.StreamReader()
        for line in r.iter_lines():
            for _ in reader.line(line):
                on_token(replica)
            if reader.error is not None:
                break
        ok = reader.finish_reason is not None and reader.done
        result = "ok" if ok else "error-event" if reader.error is not None else "broken"
        return Outcome("stream", started, 200, replica, result)


@dataclass
class KillUnderLoad:
    outcomes: list[Outcome]
    killed_at: float  # time.monotonic()
    detected_s: float  # from the kill until the gateway marked the replica down


def kill_under_load(
    url: str,
    model: str,
    dead: str,
    kill: Callable[[], None],
    healthy: Callable[[], bool],
    *,
    per_client: int,
    detect_within_s: float,
    timeout_s: float = 120,
) -> KillUnderLoad:
    """Four clients (two sending whole requests of 12 tokens, two streams of 64) send
    `per_client` requests each to `model` at the gateway `url`; `kill()` runs once a stream is on
    the replica `dead`; `healthy()` is the gateway's view of that replica, which must turn false
    within `detect_within_s`."""
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    streaming_from_dead = threading.Event()

    def on_token(replica: str | None) -> None:
        if replica == dead:
            streaming_from_dead.set()

    def client_loop(kind: str) -> None:
        with httpx.Client(base_url=url, timeout=timeout_s) as client:
            for _ in range(per_client):
                started = time.monotonic()
                if kind == "stream":
                    body = chat_body(model, 64, stream=True)
                    outcome = stream_outcome(client, body, started, on_token)
                else:
                    r = client.post("/v1/chat/completions", json=chat_body(model, 12))
                    ok = r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 12
                    result = "ok" if ok else r.text[:200]
                    outcome = Outcome("plain", started, r.status_code, replica_of(r), result)
                with lock:
                    outcomes.append(outcome)

    clients = [threading.Thread(target=client_loop, args=(k,)) for k in ["plain", "stream"] * 2]
    for t in clients:
        t.start()
    assert streaming_from_dead.wait(timeout=timeout_s), f"no stream reached {dead}"
    killed_at = time.monotonic()
    kill()
    detected_s = wait_for(lambda: not healthy(), timeout=detect_within_s)
    for t in clients:
        t.join(timeout=timeout_s * per_client)
    assert not any(t.is_alive() for t in clients), "a client hung"
    assert len(outcomes) == 4 * per_client
    return KillUnderLoad(outcomes, killed_at, detected_s)


def check_no_accepted_request_lost(run: KillUnderLoad, dead: str, survivor: str) -> None:
    outcomes = run.outcomes
    assert any(o.result == "error-event" for o in outcomes), outcomes  # the stream cut on `dead`
    for o in outcomes:
        assert o.status == 200, o
        if o.kind == "plain":
            assert o.result == "ok", o  # replayed on the survivor if it was on the dead replica
        else:  # a stream on the dead replica may end with an error event, never silently
            assert o.result in {"ok", "error-event"}, o
            if o.result == "error-event":
                assert o.started < run.killed_at and o.replica == dead, o
    later = [o for o in outcomes if o.started > run.killed_at + run.detected_s]
    assert all(o.replica == survivor for o in later), later
