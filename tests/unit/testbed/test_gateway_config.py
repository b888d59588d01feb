"""The gateway config `edgellm testbed up --gateway-port` writes is valid for `edgellm serve`."""

from __future__ import annotations

from pathlib import Path

from edgellm.config import EdgeLLMConfig
from edgellm.testbed.cluster import Testbed
from edgellm.testbed.gateway import default_config, edge_service_name
from edgellm.testbed.spec import TestbedSpec


def test_default_gateway_config_parses(tmp_path: Path) -> None:
    testbed = Testbed(TestbedSpec(), log_dir=tmp_path)  # not started: nothing touches the host
    cfg = EdgeLLMConfig(**default_config(testbed, health_interval_s=1.5))
    assert cfg.models == []
    edge, cloud = cfg.remote_models
    assert edge.backends[0].dns == edge_service_name(testbed) == "edge.eltb.testbed"
    assert cloud.tier == "cloud"
    assert cfg.router.health_interval_s == 1.5
    assert [p.name for p in cfg.policies] == ["load"]


def test_resolver_view_wraps_the_command_in_a_private_mount_namespace(tmp_path: Path) -> None:
    testbed = Testbed(TestbedSpec(cloud=None), log_dir=tmp_path)
    testbed.set_service("svc.test", ["n1", "n3"])
    assert testbed.hosts_path.read_text().splitlines()[-2:] == [
        "10.200.0.11 svc.test",
        "10.200.0.13 svc.test",
    ]
    cmd = testbed.resolver_view(["python", "-V"])
    assert cmd[:2] == ["unshare", "--mount"] and cmd[-2:] == ["python", "-V"]
    assert str(testbed.hosts_path) in cmd
