"""The harness itself: addressing, limits, killing and restarting nodes, the shaped cloud link,
and clean-up after success, failure and SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from edgellm.cli import app
from edgellm.testbed import host
from edgellm.testbed.cluster import Testbed, pid_file, record_pid, teardown
from edgellm.testbed.host import TestbedError
from edgellm.testbed.spec import NODE_PORT, NodeSpec, TestbedSpec
from tests.cluster.conftest import LINK

CHAT = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4, "temperature": 0}


def _leftovers(prefix: str) -> list[str]:
    names = host.netns_list() + host.link_names()
    return [n for n in names if n.startswith(f"{prefix}-")]


def test_every_node_has_its_own_address_and_answers(testbed: Testbed) -> None:
    assert len(testbed.nodes) >= 3
    ips = {node.ip for node in testbed.nodes.values()}
    assert len(ips) == len(testbed.nodes)
    for node in testbed.nodes.values():
        body = httpx.get(f"{node.url}/health", timeout=10).json()
        assert body == {"status": "ok", "models": ["smollm2-135m-instruct"]}


def test_nodes_reach_each_other_across_namespaces(testbed: Testbed) -> None:
    n1 = testbed.nodes["n1"]
    for other in ("n2", "n3"):
        url = f"{testbed.nodes[other].url}/health"
        code = f"import urllib.request as u; print(u.urlopen({url!r}, timeout=10).status)"
        proc = subprocess.run(
            host.in_ns(n1.ns, sys.executable, "-c", code),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.stdout.strip() == "200", proc.stderr


def test_node_processes_run_inside_their_namespace_and_cgroup(testbed: Testbed) -> None:
    for node in testbed.nodes.values():
        assert node.proc is not None
        assert node.proc.pid in host.netns_pids(node.ns)
        if testbed.cgroup_backend.name == "none":
            pytest.skip("no usable cgroup hierarchy on this host")
        for group in node.cgroups:
            assert str(node.proc.pid) in (group / "cgroup.procs").read_text().split()
        texts = {
            p.name: p.read_text()
            for g in node.cgroups
            for p in g.iterdir()
            if p.name in ("cpu.max", "cpu.cfs_quota_us", "memory.max", "memory.limit_in_bytes")
        }
        assert node.spec.cpus is not None and node.spec.memory_mb is not None
        quota = int(node.spec.cpus * 100_000)
        assert str(quota) in (texts.get("cpu.max") or texts["cpu.cfs_quota_us"])
        mem = texts.get("memory.max") or texts["memory.limit_in_bytes"]
        assert int(mem) == node.spec.memory_mb * 1024 * 1024


def test_killed_node_is_unreachable_then_restarts(testbed: Testbed) -> None:
    testbed.kill("n3")
    n3 = testbed.nodes["n3"]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{n3.url}/health", timeout=5)
    # The others do not notice.
    assert httpx.get(f"{testbed.nodes['n2'].url}/health", timeout=10).status_code == 200
    started = time.monotonic()
    testbed.start("n3")
    assert time.monotonic() - started < testbed.spec.startup_timeout_s
    reply = httpx.post(
        f"{n3.url}/v1/chat/completions", json=CHAT | {"model": "smollm2-135m-instruct"}, timeout=60
    )
    assert reply.status_code == 200
    assert reply.json()["usage"]["completion_tokens"] >= 1


def _median_rtt_ms(url: str, n: int = 15) -> float:
    samples = []
    with httpx.Client(timeout=10) as client:
        client.get(url)  # connection set-up stays out of the samples
        for _ in range(n):
            start = time.perf_counter()
            assert client.get(url).status_code == 200
            samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def test_cloud_link_adds_the_configured_delay(testbed: Testbed) -> None:
    assert testbed.cloud is not None and testbed.cloud_url is not None
    assert testbed.shaper is not None
    shaped = _median_rtt_ms(f"{testbed.cloud_url}/health")
    if testbed.shaper.needs_proxy:
        base = _median_rtt_ms(f"{testbed.cloud.url}/health")  # the link itself, unshaped
    else:
        base = _median_rtt_ms(f"{testbed.nodes['n1'].url}/health")  # an unshaped peer
    added = shaped - base
    expected = 2 * LINK.delay_ms  # one-way delay, both directions
    print(
        f"shaper={testbed.shaper.name} shaped={shaped:.1f} ms base={base:.1f} ms "
        f"added={added:.1f} ms expected={expected:.0f} ms"
    )
    # Generous on the upper side: other tests load both CPUs.
    assert expected - 2 * LINK.jitter_ms - 10 <= added <= expected + 80


def test_cloud_partition_blackholes_then_heals(testbed: Testbed) -> None:
    assert testbed.cloud is not None
    testbed.partition_cloud()
    try:
        started = time.monotonic()
        with pytest.raises(httpx.TimeoutException):
            httpx.get(f"{testbed.cloud.url}/health", timeout=1.5)
        assert time.monotonic() - started < 5
        # The edge is untouched.
        assert httpx.get(f"{testbed.nodes['n1'].url}/health", timeout=10).status_code == 200
    finally:
        testbed.heal_cloud()
    assert httpx.get(f"{testbed.cloud.url}/health", timeout=10).status_code == 200


def test_failed_start_leaves_nothing_behind(tmp_path: Path) -> None:
    # The network is built, then the node cannot start: everything built so far must go.
    spec = TestbedSpec(
        prefix="eltu",
        edge_subnet="10.201.8.0/24",  # type: ignore[arg-type]
        nodes=[NodeSpec(name="bad")],
        cloud=None,
        startup_timeout_s=60,
    )
    with pytest.raises(TestbedError, match="node bad exited"):
        Testbed(spec, log_dir=tmp_path, python=str(tmp_path / "no-such-python")).up()
    assert _leftovers("eltu") == []


def test_down_removes_leftovers_by_prefix() -> None:
    subprocess.run(["ip", "netns", "add", "eltv-x"], check=True)
    subprocess.run(["ip", "link", "add", "eltv-br", "type", "bridge"], check=True)
    try:
        result = CliRunner().invoke(app, ["testbed", "down", "--prefix", "eltv"])
        assert result.exit_code == 0, result.output
        assert "netns eltv-x" in result.stdout and "link eltv-br" in result.stdout
        assert _leftovers("eltv") == []
    finally:
        teardown("eltv")


def test_testbed_up_cleans_up_on_sigterm(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgellm",
            "testbed",
            "up",
            "--nodes",
            "1",
            "--no-cloud",
            "--prefix",
            "eltw",
            "--duration",
            "120",
            "--state",
            str(state),
            "--log-dir",
            str(tmp_path / "logs"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        while not state.exists():
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "testbed up did not come up"
            time.sleep(0.2)
        info = json.loads(state.read_text())
        url = info["nodes"]["n1"]["url"]
        assert url.endswith(f":{NODE_PORT}")
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200
        assert _leftovers("eltw")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        assert _leftovers("eltw") == []
        assert not any(
            Path(d, "eltw-n1").exists()
            for d in ("/sys/fs/cgroup/cpu", "/sys/fs/cgroup/unified", "/sys/fs/cgroup")
        )
    finally:
        if proc.poll() is None:
            proc.kill()
        teardown("eltw")


def _resolve_in_view(testbed: Testbed, host_name: str) -> list[str]:
    code = (
        "import socket, sys; print(' '.join(sorted({a[4][0] for a in "
        "socket.getaddrinfo(sys.argv[1], 8080, type=socket.SOCK_STREAM)})))"
    )
    cmd = testbed.resolver_view([sys.executable, "-c", code, host_name])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True)
    return proc.stdout.split()


def test_service_name_resolves_to_the_current_replica_set(testbed: Testbed) -> None:
    name = "smollm2.edgellm.svc.cluster.local"
    testbed.set_service(name, ["n1", "n2"])
    assert _resolve_in_view(testbed, name) == sorted(
        [testbed.nodes["n1"].ip, testbed.nodes["n2"].ip]
    )
    testbed.set_service(name, ["n3"])
    assert _resolve_in_view(testbed, name) == [testbed.nodes["n3"].ip]
    # The host's own /etc/hosts is untouched.
    assert name not in Path("/etc/hosts").read_text()


def test_cpu_share_can_change_at_run_time(testbed: Testbed) -> None:
    if testbed.cgroup_backend.name == "none":
        pytest.skip("no usable cgroup hierarchy on this host")
    try:
        testbed.set_cpus("n2", 0.2)
        quotas = [
            (g / f).read_text()
            for g in testbed.nodes["n2"].cgroups
            for f in ("cpu.max", "cpu.cfs_quota_us")
            if (g / f).exists()
        ]
        assert quotas and "20000" in quotas[0]
    finally:
        testbed.set_cpus("n2", 0.6)


def test_down_kills_recorded_helper_processes() -> None:
    # A stand-in for a gateway whose harness was SIGKILLed: its pid file is all that is left.
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "edgellm"], start_new_session=True
    )
    try:
        path = record_pid("eltz", "gateway", proc.pid)
        assert path == pid_file("eltz", "gateway")
        removed = teardown("eltz")
        assert proc.wait(timeout=10) == -signal.SIGKILL
        assert f"process {proc.pid} (gateway)" in removed
        assert not path.exists()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_cloud_link_rate_is_limited(testbed: Testbed) -> None:
    """Bulk transfer from the cloud namespace over the shaped link: tbf (or netem) caps it."""
    assert testbed.cloud is not None and LINK.rate_mbit is not None
    size = int(LINK.rate_mbit * 1e6 / 8 * 1.5)  # ~1.5 s at the configured rate
    port = 9099
    server = (
        "import socket, sys; s = socket.socket(); "
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
        f"s.bind(({testbed.cloud.ip!r}, {port})); s.listen(1); s.settimeout(30); "
        f"c, _ = s.accept(); c.sendall(bytes({size})); c.close()"
    )
    proc = subprocess.Popen(host.in_ns(testbed.cloud.ns, sys.executable, "-c", server))
    try:
        deadline = time.monotonic() + 30
        while True:  # the listener needs a moment to start
            try:
                conn = socket.create_connection((testbed.cloud.ip, port), timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        with conn:
            got = 0
            start = time.perf_counter()
            while chunk := conn.recv(1 << 16):
                got += len(chunk)
            elapsed = time.perf_counter() - start
        mbit = got * 8 / elapsed / 1e6
        print(
            f"cloud link: {got} bytes in {elapsed:.2f} s = {mbit:.1f} Mbit/s "
            f"(limit {LINK.rate_mbit} Mbit/s)"
        )
        assert got == size
        assert LINK.rate_mbit * 0.5 <= mbit <= LINK.rate_mbit * 1.15
    finally:
        proc.wait(timeout=30)
