"""The testbed: edge nodes in network namespaces on one bridge, a cloud node behind a shaped link.

    with Testbed(TestbedSpec()) as tb:
        tb.nodes["n1"].url           # http://10.200.0.11:8080
        tb.kill("n2"); tb.start("n2")
        tb.partition_cloud(); tb.heal_cloud()

Everything it creates is named `<prefix>-...` (namespaces, links, cgroups), and `teardown(prefix)`
removes all of it; it runs on exit, on SIGTERM/SIGHUP, after a failed start-up, and from
`edgellm testbed down` for whatever a killed harness left behind.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType

import httpx

from edgellm.deploy.launch import node_command
from edgellm.testbed import cgroups, host
from edgellm.testbed.host import TestbedError, in_ns, run
from edgellm.testbed.proxy import DelayProxy, LinkImpairment
from edgellm.testbed.shaping import LinkEnds, Shaper, choose
from edgellm.testbed.spec import NODE_PORT, NodeSpec, TestbedSpec

log = logging.getLogger(__name__)

NS_IF = "eth0"
BLACKHOLE_MAC = "02:00:00:00:00:01"  # no interface has it: frames sent there are silently lost


@dataclass
class Node:
    spec: NodeSpec
    ns: str
    ip: str
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    cgroups: list[Path] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{NODE_PORT}"

    @property
    def served_name(self) -> str:
        return self.spec.served_name or self.spec.model

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


RUN_DIR = Path("/run/edgellm-testbed")


def pid_file(prefix: str, name: str) -> Path:
    """Where a root-namespace helper process (the gateway) of this testbed records its pid."""
    return RUN_DIR / prefix / f"{name}.pid"


def process_start_time(pid: int) -> str:
    """The kernel's start time of `pid` (field 22 of /proc/PID/stat): with the pid, it names one
    process for good, since pids are reused."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[19]


def record_pid(prefix: str, name: str, pid: int) -> Path:
    path = pid_file(prefix, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{pid} {process_start_time(pid)}")
    return path


def log_tail(path: Path, lines: int) -> str:
    """The last `lines` lines of a process's log, for an error message."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _kill_recorded(prefix: str) -> list[str]:
    killed = []
    for path in sorted((RUN_DIR / prefix).glob("*.pid")):
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid_text, started = path.read_text().split()
            pid = int(pid_text)
            if process_start_time(pid) == started:  # still the process we started
                os.killpg(pid, signal.SIGKILL)
                killed.append(f"process {pid} ({path.stem})")
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        (RUN_DIR / prefix).rmdir()
    return killed


def teardown(prefix: str) -> list[str]:
    """Remove every namespace, link and cgroup named `<prefix>-*`, killing processes in them
    and the helper processes recorded under /run/edgellm-testbed/<prefix>/."""
    removed: list[str] = _kill_recorded(prefix)
    for ns in host.netns_list():
        if ns.startswith(f"{prefix}-"):
            for pid in host.netns_pids(ns):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            run("ip", "netns", "del", ns, check=False)
            removed.append(f"netns {ns}")
    for link in host.link_names():
        if link.startswith(f"{prefix}-"):
            run("ip", "link", "del", link, check=False)
            removed.append(f"link {link}")
    for path in cgroups.group_dirs(prefix):
        removed.append(f"cgroup {path}")
    cgroups.remove_groups(prefix)
    return removed


class Testbed:
    __test__ = False

    def __init__(
        self,
        spec: TestbedSpec,
        *,
        shaper: str = "auto",
        log_dir: Path | None = None,
        python: str = sys.executable,
    ) -> None:
        self.spec = spec
        self.shaper_name = shaper
        self.shaper: Shaper | None = None
        self.python = python
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix=f"edgellm-testbed-{spec.prefix}-"))
        self.prefix = spec.prefix
        self.bridge = f"{self.prefix}-br"
        self.cgroup_backend = cgroups.CgroupBackend()  # the real one is detected by up()
        self.proxy: DelayProxy | None = None
        self.nodes: dict[str, Node] = {}
        for i, node_spec in enumerate(spec.nodes):
            self.nodes[node_spec.name] = self._node(node_spec, spec.node_ip(i))
        self.cloud: Node | None = None
        if spec.cloud is not None:
            self.cloud = self._node(spec.cloud, spec.cloud_ip())
        self.hosts_path = self.log_dir / "hosts"
        self._services: dict[str, list[str]] = {}
        self._up = False
        self._lock = threading.Lock()
        self._old_handlers: dict[int, object] = {}

    def _node(self, node_spec: NodeSpec, ip: str) -> Node:
        return Node(
            node_spec, f"{self.prefix}-{node_spec.name}", ip, self.log_dir / f"{node_spec.name}.log"
        )

    # --- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> Testbed:
        self.up()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()

    def up(self, *, wait: bool = True) -> None:
        reason = host.unavailable_reason()
        if reason:
            raise TestbedError(reason)
        self._check_free()
        self.cgroup_backend = cgroups.detect()
        atexit.register(self.down)
        self._install_signal_handlers()
        self._up = True
        try:
            self._build_network()
            for node in self.all_nodes():
                self.start(node.spec.name, wait=False)
            if wait:
                self.wait_ready(list(self.all_nodes()))
        except BaseException:
            self.down()
            raise

    def down(self) -> None:
        with self._lock:
            if not self._up:
                return
            self._up = False
            for node in self.all_nodes():
                self._stop_process(node)
            if self.proxy is not None:
                self.proxy.stop()
                self.proxy = None
            teardown(self.prefix)
            self._restore_signal_handlers()
            atexit.unregister(self.down)

    def _check_free(self) -> None:
        leftovers = [ns for ns in host.netns_list() if ns.startswith(f"{self.prefix}-")]
        leftovers += [ln for ln in host.link_names() if ln.startswith(f"{self.prefix}-")]
        if leftovers:
            raise TestbedError(
                f"a testbed with prefix {self.prefix!r} exists ({', '.join(leftovers)}); "
                f"remove it with `edgellm testbed down --prefix {self.prefix}`"
            )
        mine = [self.spec.edge_subnet] + ([self.spec.cloud_subnet] if self.cloud else [])
        for dst in host.routes():
            if not dst[:1].isdigit():  # "default", multicast names
                continue
            try:
                net = ipaddress.IPv4Network(dst if "/" in dst else f"{dst}/32", strict=False)
            except ValueError:
                continue
            if any(net.overlaps(m) for m in mine) and not net.is_loopback:
                raise TestbedError(f"{net} is already routed on this host; choose other subnets")

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def _exit(signum: int, frame: FrameType | None) -> None:
            raise SystemExit(128 + signum)

        for sig in (signal.SIGTERM, signal.SIGHUP):
            self._old_handlers[sig] = signal.signal(sig, _exit)

    def _restore_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._old_handlers.clear()

    # --- network -------------------------------------------------------------------------------

    def _build_network(self) -> None:
        spec = self.spec
        run("ip", "link", "add", self.bridge, "type", "bridge")
        run(
            "ip",
            "addr",
            "add",
            f"{spec.bridge_ip()}/{spec.edge_subnet.prefixlen}",
            "dev",
            self.bridge,
        )
        run("ip", "link", "set", self.bridge, "up")
        for node in self.nodes.values():
            self._veth(node, f"{node.ip}/{spec.edge_subnet.prefixlen}")
            run("ip", "link", "set", node.ns, "master", self.bridge)
            run("ip", "link", "set", node.ns, "up")
            run(*in_ns(node.ns, "ip", "route", "add", "default", "via", spec.bridge_ip()))
        if self.cloud is not None and spec.cloud is not None:
            cloud = self.cloud
            self._veth(cloud, f"{cloud.ip}/{spec.cloud_subnet.prefixlen}")
            run(
                "ip",
                "addr",
                "add",
                f"{spec.cloud_host_ip()}/{spec.cloud_subnet.prefixlen}",
                "dev",
                cloud.ns,
            )
            run("ip", "link", "set", cloud.ns, "up")
            self.shaper = choose(self.shaper_name)
            self.shaper.apply(LinkEnds(cloud.ns, cloud.ns, NS_IF), spec.cloud.link)
            if self.shaper.needs_proxy:
                link = spec.cloud.link
                impairment = LinkImpairment(link.delay_ms, link.jitter_ms, link.loss_pct)
                self.proxy = DelayProxy(cloud.ip, NODE_PORT, impairment).start()
            log.info("cloud link shaped by %s", self.shaper.name)

    def _veth(self, node: Node, cidr: str) -> None:
        """Namespace + veth pair: `<prefix>-<node>` in the root namespace, eth0 inside."""
        run("ip", "netns", "add", node.ns)
        # The peer is born inside the namespace with its final name: no temporary name that
        # would have to fit in 15 characters too.
        run("ip", "link", "add", node.ns, "type", "veth", "peer", "name", NS_IF, "netns", node.ns)
        run(*in_ns(node.ns, "ip", "addr", "add", cidr, "dev", NS_IF))
        run(*in_ns(node.ns, "ip", "link", "set", NS_IF, "up"))
        run(*in_ns(node.ns, "ip", "link", "set", "lo", "up"))

    # --- name resolution as a headless Service does it ------------------------------------------

    def set_service(self, host: str, node_names: list[str]) -> None:
        """Make `host` resolve to these nodes' addresses (one A record each) for processes started
        through `resolver_view`, the way a headless Service lists its ready pods. The file is
        rewritten in place: a bind mount follows the inode, not the path."""
        self._services[host] = [self.node(n).ip for n in node_names]
        lines = ["127.0.0.1 localhost", "::1 localhost"]
        lines += [f"{ip} {h}" for h, ips in sorted(self._services.items()) for ip in ips]
        with self.hosts_path.open("w") as f:
            f.write("\n".join(lines) + "\n")

    def resolver_view(self, cmd: list[str]) -> list[str]:
        """`cmd` in a private mount namespace whose /etc/hosts is the testbed's: the process uses
        the real system resolver (glibc NSS `files`), and nothing else on the host is affected."""
        if not self.hosts_path.exists():
            self.set_service("localhost.testbed", [])
        script = 'mount --bind "$0" /etc/hosts && exec "$@"'
        return [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            str(self.hosts_path),
            *cmd,
        ]

    @property
    def cloud_url(self) -> str | None:
        """Where the root namespace reaches the cloud: through the proxy when it shapes delay."""
        if self.cloud is None:
            return None
        if self.proxy is not None:
            return f"http://{self.proxy.address}"
        return self.cloud.url

    def partition_cloud(self) -> None:
        """Silently drop every frame on the cloud link (both directions), like a cut WAN line:
        connections hang rather than being refused. Neighbour entries pointing to a MAC nobody
        has do that without netfilter or tc classifiers."""
        cloud = self._require_cloud()
        spec = self.spec
        run(
            "ip",
            "neigh",
            "replace",
            cloud.ip,
            "lladdr",
            BLACKHOLE_MAC,
            "dev",
            cloud.ns,
            "nud",
            "permanent",
        )
        run(
            *in_ns(
                cloud.ns,
                "ip",
                "neigh",
                "replace",
                spec.cloud_host_ip(),
                "lladdr",
                BLACKHOLE_MAC,
                "dev",
                NS_IF,
                "nud",
                "permanent",
            )
        )

    def heal_cloud(self) -> None:
        cloud = self._require_cloud()
        run("ip", "neigh", "del", cloud.ip, "dev", cloud.ns, check=False)
        run(
            *in_ns(cloud.ns, "ip", "neigh", "del", self.spec.cloud_host_ip(), "dev", NS_IF),
            check=False,
        )

    def _require_cloud(self) -> Node:
        if self.cloud is None:
            raise TestbedError("this testbed has no cloud")
        return self.cloud

    # --- node processes ------------------------------------------------------------------------

    def all_nodes(self) -> list[Node]:
        return list(self.nodes.values()) + ([self.cloud] if self.cloud else [])

    def node(self, name: str) -> Node:
        for node in self.all_nodes():
            if node.spec.name == name:
                return node
        raise KeyError(name)

    def start(self, name: str, *, wait: bool = True) -> Node:
        node = self.node(name)
        if node.running:
            return node
        s = node.spec
        cmd = node_command(s.served(), host=node.ip, port=NODE_PORT, python=self.python)
        if s.cpuset:
            cmd = ["taskset", "-c", ",".join(map(str, s.cpuset)), *cmd]
        with node.log_path.open("ab") as out:
            node.proc = subprocess.Popen(
                in_ns(node.ns, *cmd), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        # The pid survives the exec chain (ip netns exec -> taskset -> python), and the model
        # loads for seconds after this, so the limits are in place before it allocates much.
        limits = cgroups.Limits(s.cpus, s.memory_mb)
        node.cgroups = self.cgroup_backend.confine(node.ns, node.proc.pid, limits)
        if wait:
            self.wait_ready([node])
        return node

    def set_cpus(self, name: str, cpus: float) -> None:
        """Change a running node's CPU share, e.g. to make it a slow node."""
        node = self.node(name)
        if node.proc is None:
            raise TestbedError(f"node {name} is not running")
        node.spec = node.spec.model_copy(update={"cpus": cpus})
        limits = cgroups.Limits(cpus, node.spec.memory_mb)
        node.cgroups = self.cgroup_backend.confine(node.ns, node.proc.pid, limits)

    def kill(self, name: str) -> None:
        """SIGKILL, like a power cut or OOM kill: no graceful shutdown."""
        self._stop_process(self.node(name))

    def _stop_process(self, node: Node) -> None:
        if node.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            node.proc.wait(timeout=10)
        node.proc = None

    def wait_ready(self, nodes: list[Node], timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.spec.startup_timeout_s)
        pending = list(nodes)
        with httpx.Client(timeout=2.0) as client:
            while pending:
                for node in list(pending):
                    if not node.running:
                        raise TestbedError(f"node {node.spec.name} exited: {self._tail(node)}")
                    with contextlib.suppress(httpx.HTTPError, ValueError):
                        reply = client.get(f"{node.url}/health")
                        if reply.status_code == 200:
                            pending.remove(node)
                        elif reply.json().get("status") == "failed":
                            error = reply.json().get("error", "")
                            raise TestbedError(f"node {node.spec.name} failed to load: {error}")
                if pending and time.monotonic() > deadline:
                    names = ", ".join(n.spec.name for n in pending)
                    raise TestbedError(f"nodes not ready in time: {names}")
                if pending:
                    time.sleep(0.2)

    @staticmethod
    def _tail(node: Node, lines: int = 15) -> str:
        return log_tail(node.log_path, lines)

    def describe(self) -> dict[str, object]:
        return {
            "prefix": self.prefix,
            "shaper": self.shaper.name if self.shaper else None,
            "cgroups": self.cgroup_backend.name,
            "log_dir": str(self.log_dir),
            "nodes": {
                n.spec.name: {
                    "url": n.url,
                    "model": n.served_name,
                    "ns": n.ns,
                    "cpus": n.spec.cpus,
                    "memory_mb": n.spec.memory_mb,
                }
                for n in self.nodes.values()
            },
            "cloud": None
            if self.cloud is None
            else {
                "url": self.cloud_url,
                "model": self.cloud.served_name,
                "ns": self.cloud.ns,
                "link": self.spec.cloud.link.model_dump() if self.spec.cloud else None,
            },
        }
