"""Testbed specs: names that fit Linux interface names, private non-overlapping subnets."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from edgellm.config import ConfigError
from edgellm.testbed.shaping import SHAPERS, choose
from edgellm.testbed.spec import NodeSpec, TestbedSpec


def test_defaults_give_three_nodes_and_a_cloud() -> None:
    spec = TestbedSpec()
    assert [n.name for n in spec.nodes] == ["n1", "n2", "n3"]
    assert spec.cloud is not None and spec.cloud.link.delay_ms > 0
    assert [spec.node_ip(i) for i in range(3)] == ["10.200.0.11", "10.200.0.12", "10.200.0.13"]
    assert spec.bridge_ip() == "10.200.0.1"
    assert (spec.cloud_host_ip(), spec.cloud_ip()) == ("10.200.1.1", "10.200.1.2")


def test_interface_names_fit_in_15_characters() -> None:
    longest = TestbedSpec(prefix="abcdef", nodes=[NodeSpec(name="abcdefgh")], cloud=None)
    assert len(f"{longest.prefix}-{longest.nodes[0].name}") <= 15
    with pytest.raises(ValidationError):
        TestbedSpec(prefix="abcdefg")
    with pytest.raises(ValidationError):
        NodeSpec(name="abcdefghi")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"edge_subnet": "8.8.8.0/24"}, "not a private network"),
        ({"cloud_subnet": "10.200.0.0/30"}, "overlap"),
        ({"nodes": [{"name": "a"}, {"name": "a"}]}, "unique"),
        ({"nodes": [{"name": "br"}]}, "unique"),
        ({"edge_subnet": "10.9.0.0/29"}, "too small"),
    ],
)
def test_rejects_bad_specs(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TestbedSpec.model_validate(changes)


def test_yaml_errors_name_the_field(tmp_path: Path) -> None:
    path = tmp_path / "testbed.yaml"
    path.write_text("nodes:\n  - name: n1\n    cpus: -1\n")
    with pytest.raises(ConfigError, match=r"nodes\.0\.cpus"):
        TestbedSpec.from_yaml(path)


def test_shapers_are_registered_by_name() -> None:
    assert set(SHAPERS) == {"netem", "tbf+proxy"}
    assert choose("tbf+proxy").needs_proxy
    assert not choose("netem").needs_proxy
    with pytest.raises(ValueError, match="unknown shaper"):
        choose("nope")


def test_example_testbed_config_parses() -> None:
    example = Path(__file__).resolve().parents[3] / "deploy" / "testbed" / "testbed.yaml"
    spec = TestbedSpec.from_yaml(example)
    assert [n.name for n in spec.nodes] == ["n1", "n2", "n3"]
    assert spec.cloud is not None and spec.cloud.link.loss_pct == 0.5
