"""A replica that would ignore part of a request is skipped for it: a request asking for
structured output, a grammar, tools, log-probs or echo goes only to replicas whose `supports`
lists it, and is a 400 naming the field when no replica does. Plain requests go anywhere."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.gateway.harness import Fake, remote, start_fake, start_gateway

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "user", "content": "hi"}]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


@pytest.fixture
def fakes() -> Iterator[tuple[Fake, Fake]]:
    plain = start_fake(name="plain", reply=["a"])  # an Ollama-like server: text only
    full = start_fake(name="full", reply=["b"])
    yield plain, full
    plain.served.stop()
    full.served.stop()


CASES: list[tuple[str, dict[str, Any], str]] = [
    ("/v1/chat/completions", {"response_format": {"type": "json_object"}}, "response_format"),
    ("/v1/chat/completions", {"grammar": 'root ::= "x"'}, "grammar"),
    ("/v1/chat/completions", {"tools": [TOOL], "tool_choice": "required"}, "tools"),
    ("/v1/chat/completions", {"logprobs": True}, "logprobs"),
    ("/v1/completions", {"echo": True, "logprobs": 0}, "echo"),
]


def _body(path: str, extra: dict[str, Any]) -> dict[str, Any]:
    base: dict[str, Any] = {"model": "edge", "max_tokens": 1}
    base |= {"messages": MESSAGES} if path.endswith("chat/completions") else {"prompt": "hi"}
    return base | extra


@pytest.mark.parametrize(("path", "extra", "field"), CASES, ids=[c[2] for c in CASES])
def test_a_request_goes_only_to_replicas_that_honour_it(
    fakes: tuple[Fake, Fake], path: str, extra: dict[str, Any], field: str
) -> None:
    plain, full = fakes
    gw = start_gateway(
        {
            "models": [],
            "remote_models": [
                {
                    "name": "edge",
                    "tier": "edge-small",
                    "backends": [
                        {"urls": [plain.base_url], "health_path": None, "supports": []},
                        {"urls": [full.base_url], "health_path": None},
                    ],
                }
            ],
        }
    )
    try:
        with gw.http() as http:
            for _ in range(4):  # round-robin would reach the plain replica within two
                r = http.post(path, json=_body(path, extra))
                assert r.status_code == 200, r.text
                assert plain.base_url in r.json()["route"]["signals"]["skipped_for_features"]
            # the control: a plain request may go to either replica
            for _ in range(4):
                r = http.post(path, json=_body(path, {}))
                assert r.status_code == 200, r.text
        assert plain.backend.requests >= 1
        assert full.backend.requests >= 4
    finally:
        gw.stop()


def test_no_capable_replica_is_a_400_naming_the_field(fakes: tuple[Fake, Fake]) -> None:
    plain, _ = fakes
    gw = start_gateway(
        {"models": [], "remote_models": [remote("edge", [plain.base_url], supports=["logprobs"])]}
    )
    try:
        with gw.http() as http:
            for path, extra, field in CASES:
                r = http.post(path, json=_body(path, extra))
                if field == "logprobs":
                    assert r.status_code == 200, r.text
                    continue
                assert r.status_code == 400, (field, r.text)
                assert r.json()["error"]["param"] == field
        assert plain.backend.requests == 1  # only the request it honours reached it
    finally:
        gw.stop()
