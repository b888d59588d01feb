"""`client.chat.completions.parse(..., response_format=SomeModel)` with the official openai
client returns a parsed object for every prompt of a set of nested schemas (objects, arrays,
enums, numbers, optional fields), against a node and against the gateway in front of it, with
both bundled models.

Strings and arrays are bounded in every schema, and the grammar bounds numbers (16 digits) and
whitespace, so every answer the grammar allows has a bounded length: with `max_tokens` above
it, an answer always ends by the grammar and always parses. Without the bounds a model may
ramble inside a string until `max_tokens` (`test_structured_output_api.py` shows that case)."""

from __future__ import annotations

from collections.abc import Iterator
from enum import Enum
from typing import Literal

import openai
import pytest
from pydantic import BaseModel, Field

from edgellm.config import EngineConfig, ModelConfig
from tests.integration.gateway.harness import Gateway, start_gateway
from tests.integration.servers import RunningServer, start_server

pytestmark = pytest.mark.integration

MODELS = ["smollm2-135m-instruct", "gemma3-270m"]


class Reading(BaseModel):
    sensor: str = Field(max_length=16)
    celsius: float
    ok: bool


class Item(BaseModel):
    name: str = Field(max_length=16)
    quantity: int


class Order(BaseModel):
    items: list[Item] = Field(min_length=1, max_length=3)
    priority: Literal["low", "normal", "high"]
    note: str | None = Field(None, max_length=24)


class State(Enum):
    ON = "on"
    OFF = "off"
    FAULT = "fault"


class Owner(BaseModel):
    name: str = Field(max_length=16)
    site: str = Field(max_length=16)


class Device(BaseModel):
    owner: Owner
    state: State
    tags: list[str] = Field(max_length=3)
    firmware: str | None = Field(max_length=8)


class Stop(BaseModel):
    city: str = Field(max_length=16)
    minutes: int


class Trip(BaseModel):
    stops: list[Stop] = Field(max_length=3)
    total_km: float
    return_trip: bool | None = None


CASES: list[tuple[type[BaseModel], str]] = [
    (Reading, "Give the temperature reading of sensor T1 as JSON."),
    (Order, "Order two boxes of screws, urgently, as JSON."),
    (Device, "Describe the gateway device owned by Ana in Porto as JSON."),
    (Trip, "Plan a short trip from Lyon to Geneva as JSON."),
]


@pytest.fixture(scope="module")
def node() -> Iterator[RunningServer]:
    engine = EngineConfig(n_ctx=1024, n_threads=2, parallel=2)
    server = start_server([ModelConfig(name=m, source=m, engine=engine) for m in MODELS])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(node: RunningServer) -> Iterator[Gateway]:
    remote = [
        {
            "name": m,
            "tier": "edge-small",
            "backends": [{"url": node.base_url, "model": m, "health_path": None}],
        }
        for m in MODELS
    ]
    gw = start_gateway({"models": [], "remote_models": remote})
    yield gw
    gw.stop()


@pytest.fixture(params=["node", "gateway"])
def client(request: pytest.FixtureRequest) -> openai.OpenAI:
    if request.param == "node":
        node: RunningServer = request.getfixturevalue("node")
        return node.client(timeout=300)
    gateway: Gateway = request.getfixturevalue("gateway")
    return gateway.client(timeout=300)


@pytest.mark.parametrize("model", MODELS)
def test_every_prompt_parses_into_its_model(client: openai.OpenAI, model: str) -> None:
    for schema, prompt in CASES:
        for temperature, seed in ((0.0, 0), (0.8, 11)):
            r = client.chat.completions.parse(
                model=model,
                messages=[{"role": "user", "content": prompt}],
                response_format=schema,
                temperature=temperature,
                seed=seed,
                max_tokens=400,
            )
            choice = r.choices[0]
            assert choice.finish_reason == "stop", (schema.__name__, choice.message.content)
            assert isinstance(choice.message.parsed, schema)
            assert schema.model_validate_json(choice.message.content or "") == (
                choice.message.parsed
            )
