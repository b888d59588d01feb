"""One way to launch a node: every field a cluster.yaml or a testbed spec sets for a model reaches
the `edgellm node` process, through the real CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from edgellm.cli import app
from edgellm.config import EdgeLLMConfig, EngineConfig, ModelConfig
from edgellm.deploy import render as r
from edgellm.deploy.launch import (
    ENGINE_FLAGS,
    free_port,
    node_args,
    node_command,
    served_model,
    wait_healthy,
)
from edgellm.deploy.spec import ClusterSpec
from edgellm.testbed.spec import NodeSpec

# Every engine field away from its default, so a dropped flag shows as a default on the node.
ENGINE = {
    "n_ctx": 3072,
    "n_threads": 3,
    "n_batch": 128,
    "n_ubatch": 64,
    "seed": 7,
    "flash_attn": False,
    "parallel": 3,
    "kv_unified": True,
    "max_queue": 5,
    "default_max_tokens": 77,
}


def test_the_sample_engine_sets_every_field_away_from_its_default() -> None:
    assert set(ENGINE) == set(EngineConfig.model_fields)
    defaults = EngineConfig()
    assert all(getattr(defaults, k) != v for k, v in ENGINE.items())


def test_every_engine_field_has_a_node_flag() -> None:
    assert set(ENGINE_FLAGS) == set(EngineConfig.model_fields)


def served_by_cli(args: list[str], monkeypatch: pytest.MonkeyPatch) -> EdgeLLMConfig:
    """What `edgellm ARGS` would serve: the real command, with the server's `run` replaced."""
    seen: list[EdgeLLMConfig] = []
    monkeypatch.setattr("edgellm.node.server.run", lambda cfg, **_: seen.append(cfg))
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (cfg,) = seen
    return cfg


def cluster(engine: dict[str, Any], aliases: list[str]) -> ClusterSpec:
    return ClusterSpec.model_validate(
        {
            "nodes": {"m": {"resources": {"cpu_limit": "2"}}},
            "config": {
                "models": [
                    {
                        "name": "m",
                        "source": "/models/m.gguf",
                        "aliases": aliases,
                        "tier": "edge-large",
                        "engine": engine,
                    }
                ]
            },
        }
    )


def node_container(spec: ClusterSpec) -> dict[str, Any]:
    for objs in r.render(spec).values():
        for obj in objs:
            if obj["kind"] == "Deployment" and obj["metadata"]["name"] == r.node_name("m"):
                (container,) = obj["spec"]["template"]["spec"]["containers"]
                return container
    raise AssertionError("no node Deployment")


def test_a_rendered_node_runs_with_every_field_of_its_cluster_yaml(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = cluster(ENGINE, ["m-alias", "other"])
    # The rendered manifest, as K3s would get it from the YAML file.
    container = yaml.safe_load(yaml.safe_dump(node_container(spec)))
    assert container["command"] == ["edgellm"]
    cfg = served_by_cli(container["args"], monkeypatch)
    assert cfg.models == spec.config.models
    assert (cfg.server.host, cfg.server.port) == ("0.0.0.0", r.PORT)


def test_a_rendered_node_with_defaults_gets_its_threads_from_the_cpu_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = cluster({}, [])
    (served,) = served_by_cli(node_container(spec)["args"], monkeypatch).models
    assert served.engine == EngineConfig(n_threads=2)
    assert served.engine != spec.config.models[0].engine  # n_threads=0 became the CPU limit
    assert served.aliases == []


@pytest.mark.parametrize("flash_attn", [None, True, False])
def test_flash_attn_round_trips_all_three_values(
    flash_attn: bool | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = served_model("/models/x.gguf", engine=EngineConfig(flash_attn=flash_attn))
    (served,) = served_by_cli(node_args(model, host="h", port=1), monkeypatch).models
    assert served.engine.flash_attn is flash_attn


def test_a_testbed_node_runs_with_its_parallel_and_engine_fields(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = {k: v for k, v in ENGINE.items() if k not in {"n_threads", "n_ctx", "parallel"}}
    engine.pop("max_queue")
    node = NodeSpec(
        name="n1", threads=2, ctx=2048, parallel=4, max_queue=3, served_name="small", engine=engine
    )
    cmd = node_command(node.served(), host="10.0.0.2", port=8080, python="py")
    assert cmd[:3] == ["py", "-m", "edgellm"]
    cfg = served_by_cli(cmd[3:], monkeypatch)
    (served,) = cfg.models
    assert served.name == "small"
    assert served.engine == EngineConfig.model_validate(
        engine | {"n_threads": 2, "n_ctx": 2048, "parallel": 4, "max_queue": 3}
    )
    assert (cfg.server.host, cfg.server.port) == ("10.0.0.2", 8080)


def test_a_testbed_node_refuses_an_unknown_engine_field_or_a_second_way_to_set_one() -> None:
    with pytest.raises(ValueError, match="n_gpu"):
        NodeSpec(name="n1", engine={"n_gpu": 1})
    with pytest.raises(ValueError, match="parallel"):
        NodeSpec(name="n1", engine={"parallel": 2})
    assert NodeSpec(name="n1", parallel=2).served().engine.parallel == 2


def test_served_model_names_a_file_by_its_stem_and_keeps_an_explicit_tier() -> None:
    assert served_model("/m/My Model.gguf").name == "My-Model"
    assert served_model("/m/a.gguf", tier="edge-large").tier == "edge-large"
    assert served_model("gemma3-270m").tier == "edge-large"
    assert isinstance(served_model("x.gguf", aliases=["y"]), ModelConfig)


def test_the_node_cli_refuses_an_invalid_engine_value() -> None:
    result = CliRunner().invoke(app, ["node", "--model", "x.gguf", "--parallel", "0"])
    assert result.exit_code == 2
    assert "parallel" in result.output


def test_the_committed_example_cluster_renders_nodes_the_cli_accepts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = Path(__file__).resolve().parents[3]
    spec = ClusterSpec.from_yaml(root / "deploy" / "k3s" / "cluster.yaml")
    for model in spec.config.models:
        args = r.node_objects(spec, model)[0]["spec"]["template"]["spec"]["containers"][0]["args"]
        (served,) = served_by_cli(args, monkeypatch).models
        assert served.aliases == model.aliases
        assert served.engine.model_copy(update={"n_threads": 0}) == model.engine


def test_wait_healthy_tells_ready_from_exited_from_silent(tmp_path: Path) -> None:
    """The one wait for a launched process (the bench's node, the testbed's gateway): None once
    /health answers 200, else why not."""
    (tmp_path / "health").write_text("ok")
    port = free_port()
    serving = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    exits = [sys.executable, "-c", "import sys; sys.exit(3)"]
    silent = [sys.executable, "-c", "import time; time.sleep(30)"]
    url = f"http://127.0.0.1:{port}"
    with subprocess.Popen(serving, cwd=tmp_path, stderr=subprocess.DEVNULL) as server:
        try:
            assert wait_healthy(url, server, timeout_s=30) is None
        finally:
            server.kill()
    with subprocess.Popen(exits) as process:
        assert wait_healthy(url, process, timeout_s=30) == "exited with code 3"
    with subprocess.Popen(silent) as process:
        try:
            assert wait_healthy(url, process, timeout_s=0.5) == "not healthy in 0.5 s"
        finally:
            process.kill()
