"""schemathesis against a real `edgellm node` and a real `edgellm serve` gateway (both bundled
models, the node as a remote model, a cascade policy, an API key), from their own OpenAPI
documents: no 5xx, only documented statuses and content types, answers valid against the
schema; the project's own endpoints reject what their schema rejects. After the run the
process is alive and healthy, and most generation cases reached a model.

The seed and the number of cases are fixed (EDGELLM_FUZZ_SEED, EDGELLM_FUZZ_EXAMPLES override
them for the long run, benchmarks/fuzz.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.fuzzing import (
    OPEN_PATHS,
    Server,
    record,
    shape_body,
    start_gateway,
    start_node,
    with_key,
)

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("EDGELLM_FUZZ_SEED", "20261204"))
EXAMPLES = int(os.environ.get("EDGELLM_FUZZ_EXAMPLES", "100"))  # random ones per operation
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# EdgeLLM's own endpoints validate strictly, so a body outside their schema must be refused;
# OpenAI's coerce ("5" for 5) as OpenAI does.
STRICT = {"/tokenize", "/detokenize", "/v1/loglikelihood"}
# Of the valid bodies sent with a key to chat, text completions and scoring: they must reach
# the model (81-82 % measured). All cases included, the coverage phase's schema violations
# (more of them with every optional field the schema gains, and one per object since request
# objects refuse unknown fields) are refused on purpose, so that share is only bounded from
# below (37 % measured).
MIN_VALID_GENERATION_200 = 0.7
MIN_GENERATION_200 = 0.3


def _config() -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            # random bodies are valid ones (to reach the engine); the coverage phase sends
            # both the schema's boundary values and its violations, one of each kind
            "generation": {"mode": "positive", "max-examples": EXAMPLES, "database": "none"},
            "phases": {
                "coverage": {"generation": {"mode": "all"}},
                "stateful": {"enabled": False},
            },
            "request-timeout": 120,
        }
    )


def _load(server: Server) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_url(
        f"{server.url}/openapi.json", config=_config(), headers=server.headers()
    )

    @schema.hook
    def map_case(ctx: schemathesis.HookContext, case: Case) -> Case:
        if isinstance(case.body, dict):
            positive = case.meta is None or case.meta.generation.mode is GenerationMode.POSITIVE
            shape_body(case.path, case.body, server, positive=positive)
        return case

    return schema


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_node(tmp_path_factory.mktemp("fuzz"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, node: Server) -> Iterator[Server]:
    server = start_gateway(tmp_path_factory.mktemp("fuzz"), node)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def node_schema(node: Server) -> schemathesis.BaseSchema:
    return _load(node)


@pytest.fixture(scope="module")
def gateway_schema(gateway: Server) -> schemathesis.BaseSchema:
    return _load(gateway)


def _call(server: Server, case: Case) -> None:
    keyed = with_key(server, case.body, case.path)
    checks = [*CHECKS, negative_data_rejection] if case.path in STRICT else CHECKS
    response = case.call_and_validate(
        headers=server.headers() if keyed else {}, checks=checks, timeout=120
    )
    mode = case.meta.generation.mode if case.meta is not None else GenerationMode.POSITIVE
    outcome = case.path, response.status_code
    server.outcomes[outcome] += 1
    if keyed:
        server.keyed[outcome] += 1
        if mode is GenerationMode.POSITIVE:
            server.positive[outcome] += 1
    if server.key is not None and not keyed and case.path not in OPEN_PATHS:
        assert response.status_code == 401, f"{case.path} answered without an API key"


node_cases = schemathesis.pytest.from_fixture("node_schema")
gateway_cases = schemathesis.pytest.from_fixture("gateway_schema")


@node_cases.parametrize()
def test_node_fuzzed(case: Case, node: Server) -> None:
    _call(node, case)


def _survived(server: Server) -> None:
    alive = server.proc.poll() is None
    health = server.health() if alive else None
    summary = server.summary() | {"alive": alive, "health": health}
    record(summary)
    assert alive, f"{server.name} died:\n{server.log_tail()}"
    assert health == 200
    assert summary["generation_cases"] > 0
    assert summary["generation_200_fraction"] >= MIN_GENERATION_200, summary
    valid, valid_ok = summary["positive_generation_cases"], summary["positive_generation_200"]
    assert valid > 0 and valid_ok / valid >= MIN_VALID_GENERATION_200, summary


def test_node_alive_and_reached_by_the_cases(node: Server) -> None:
    _survived(node)


@gateway_cases.parametrize()
def test_gateway_fuzzed(case: Case, gateway: Server) -> None:
    _call(gateway, case)


def test_gateway_alive_and_reached_by_the_cases(gateway: Server, node: Server) -> None:
    _survived(gateway)
    assert node.proc.poll() is None, f"the remote node died:\n{node.log_tail()}"
