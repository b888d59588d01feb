from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unit.bench.fakes import FakeBehaviour, FakeServer, start_fake


@pytest.fixture
def fake_server(request: pytest.FixtureRequest) -> Iterator[FakeServer]:
    behaviour = getattr(request, "param", None) or FakeBehaviour()
    server = start_fake(behaviour)
    yield server
    server.stop()
