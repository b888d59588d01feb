"""`edgellm serve --config FILE` as a process: the gateway in front of a fake backend."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
from typer.testing import CliRunner

from edgellm.cli import app
from tests.integration.gateway.harness import start_fake
from tests.integration.servers import free_port
from tests.integration.test_cli import spawn, stop

pytestmark = pytest.mark.integration


def test_serve_with_a_gateway_config(tmp_path: Path) -> None:
    fake = start_fake(reply=["via", " gateway"])
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(
        "models: []\n"
        "remote_models:\n"
        "  - name: edge-node\n    tier: edge-small\n    aliases: [node]\n"
        f"    backends: [{{url: '{fake.base_url}'}}]\n"
        "policies: [{name: auto, kind: load}]\n"
    )
    port = free_port()
    proc = spawn(
        ["serve", "--config", str(cfg), "--port", str(port), "--log-level", "warning"], port
    )
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        for model in ("node", "auto"):
            out = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=4
            )
            assert out.choices[0].message.content == "via gateway"
        assert [m.id for m in client.models.list().data] == ["edge-node"]
    finally:
        assert stop(proc)
        fake.served.stop()


def test_a_bad_config_names_the_yaml_path(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("remote_models: [{name: c, backends: [{url: 'ftp://nope'}]}]\n")
    result = CliRunner().invoke(app, ["serve", "--config", str(cfg)])
    assert result.exit_code == 1
    assert "remote_models.0.backends.0.url" in result.output
