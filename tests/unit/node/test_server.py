"""`edgellm serve` hands uvicorn an app whose startup objects the garbage collector no longer
walks, with the gateway's protocol and no proxy-headers middleware unless access logs are on."""

from __future__ import annotations

import gc
from typing import Any

import pytest
import uvicorn
import yaml

from edgellm.config import EdgeLLMConfig
from edgellm.node import server
from edgellm.node.http_protocol import CoalescingHttpToolsProtocol

CONFIG = """
models: []
remote_models:
  - name: fake
    tier: edge-small
    backends:
      - url: http://127.0.0.1:9/v1
        health_path: null
"""


@pytest.mark.parametrize(("log_level", "debug"), [("warning", False), ("debug", True)])
def test_serve_freezes_startup_objects_and_configures_uvicorn(
    monkeypatch: pytest.MonkeyPatch, log_level: str, debug: bool
) -> None:
    seen: dict[str, Any] = {}

    def fake_run(app: object, **kwargs: Any) -> None:
        seen.update(kwargs, frozen=gc.get_freeze_count())

    monkeypatch.setattr(uvicorn, "run", fake_run)
    config = EdgeLLMConfig.model_validate(yaml.safe_load(CONFIG))
    try:
        server.run(config, log_level=log_level)
    finally:
        gc.unfreeze()  # the test process goes on collecting as usual
    assert seen["frozen"] > 10_000  # modules, the app, the config: everything alive at startup
    assert seen["http"] is CoalescingHttpToolsProtocol
    assert seen["access_log"] is debug
    assert seen["proxy_headers"] is debug
