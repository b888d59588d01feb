from pathlib import Path
from typing import Any

import pytest

from edgellm.config import BUNDLED_MODELS, ConfigError, EdgeLLMConfig
from edgellm.deploy.spec import ClusterSpec
from edgellm.testbed.spec import TestbedSpec


def test_default_serves_the_bundled_models() -> None:
    cfg = EdgeLLMConfig()
    assert [m.name for m in cfg.models] == list(BUNDLED_MODELS)
    assert cfg.server.host == "127.0.0.1" and cfg.server.port == 8080
    assert cfg.models[0].engine.default_max_tokens == 500


def test_yaml_config_and_errors_name_the_path(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(
        "server: {port: 9000}\n"
        "models:\n  - name: small\n    source: smollm2-135m-instruct\n    engine: {n_ctx: 1024}\n"
    )
    cfg = EdgeLLMConfig.from_yaml(good)
    assert cfg.server.port == 9000 and cfg.models[0].engine.n_ctx == 1024

    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - name: small\n    source: x\n    engine: {n_ctx: lots}\n")
    with pytest.raises(ConfigError, match=r"models\.0\.engine\.n_ctx"):
        EdgeLLMConfig.from_yaml(bad)

    typo = tmp_path / "typo.yaml"
    typo.write_text("server: {prot: 1}\n")
    with pytest.raises(ConfigError, match=r"server\.prot"):
        EdgeLLMConfig.from_yaml(typo)

    broken = tmp_path / "broken.yaml"
    broken.write_text("models: [\n")
    with pytest.raises(ConfigError, match="cannot read"):
        EdgeLLMConfig.from_yaml(broken)


@pytest.mark.parametrize(
    ("schema", "what"),
    [(EdgeLLMConfig, "config"), (ClusterSpec, "cluster spec"), (TestbedSpec, "testbed config")],
)
def test_every_yaml_file_is_read_the_same_way(tmp_path: Path, schema: Any, what: str) -> None:
    """The serving config, cluster.yaml and testbed.yaml share one loader: an empty file is all
    defaults, anything but a mapping at the top or an unreadable file is a ConfigError naming
    the file."""
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    loaded = schema.from_yaml(empty)
    assert loaded == schema()

    listed = tmp_path / "list.yaml"
    listed.write_text("- models\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: the top level must be a mapping"):
        schema.from_yaml(listed)

    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError, match=f"cannot read {what} {missing}"):
        schema.from_yaml(missing)


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGELLM_SERVER__PORT", "9123")
    assert EdgeLLMConfig().server.port == 9123
