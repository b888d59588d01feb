"""Fixtures for the integration tests: one shared SmolLM2 server per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.integration.servers import RunningServer, smollm2_config, start_server


@pytest.fixture(scope="session")
def smol_server() -> Iterator[RunningServer]:
    server = start_server([smollm2_config()], max_body_bytes=256 * 1024)
    yield server
    server.stop()


@pytest.fixture
def smol_client(smol_server: RunningServer) -> openai.OpenAI:
    return smol_server.client()


@pytest.fixture(scope="session")
def model_paths() -> dict[str, Path]:
    from edgellm.models import resolve_model

    return {n: resolve_model(n).path for n in ("smollm2-135m-instruct", "gemma3-270m")}
