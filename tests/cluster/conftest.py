"""A real emulated cluster for the whole session: three edge nodes and a cloud node, each in its
own network namespace (root only; skipped with the reason otherwise)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from edgellm.testbed.cluster import Testbed, teardown
from edgellm.testbed.host import unavailable_reason
from edgellm.testbed.spec import CloudSpec, LinkSpec, NodeSpec, TestbedSpec

# Distinct from the `edgellm testbed up` defaults so a user's testbed is never touched.
PREFIX = "eltt"
EDGE = "10.201.0.0/24"
CLOUD = "10.201.1.0/30"
OTHER_PREFIXES = ("eltu", "eltv", "eltw", "eltz")  # single-purpose testbeds in test_testbed.py
LINK = LinkSpec(delay_ms=40, jitter_ms=4, loss_pct=0, rate_mbit=20)

_reason = unavailable_reason()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if _reason is None:
        return
    for item in items:
        if "tests/cluster/" in str(item.fspath):
            item.add_marker(pytest.mark.skip(reason=f"cluster tests: {_reason}"))


def cluster_spec() -> TestbedSpec:
    # cpus 0.6 each on a 2-core machine; both cores are shared with the rest of the suite.
    nodes = [NodeSpec(name=f"n{i}", cpus=0.6, memory_mb=768, ctx=512) for i in (1, 2, 3)]
    cloud = CloudSpec(
        model="smollm2-135m-instruct", served_name="cloud-smollm2", ctx=512, link=LINK
    )
    return TestbedSpec(
        prefix=PREFIX,
        edge_subnet=EDGE,
        cloud_subnet=CLOUD,  # type: ignore[arg-type]
        nodes=nodes,
        cloud=cloud,
    )


@pytest.fixture(scope="session")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    for prefix in (PREFIX, *OTHER_PREFIXES):
        teardown(prefix)  # whatever a crashed earlier run left behind
    with Testbed(cluster_spec(), log_dir=tmp_path_factory.mktemp("testbed")) as tb:
        yield tb
