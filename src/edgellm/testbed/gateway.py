"""The gateway in the root namespace, in front of a testbed: `edgellm serve --config` as a real
process, seeing the testbed's service names through its private /etc/hosts."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from edgellm.deploy.launch import free_port, wait_healthy
from edgellm.testbed.cluster import Testbed, log_tail, record_pid
from edgellm.testbed.host import TestbedError


def edge_service_name(testbed: Testbed) -> str:
    return f"edge.{testbed.prefix}.testbed"


def default_config(testbed: Testbed, *, health_interval_s: float = 2.0) -> dict[str, Any]:
    """The edge nodes behind one service name (like a headless Service), the cloud node as the
    fallback tier, and `auto` = the latency-aware `load` policy."""
    served = sorted({n.served_name for n in testbed.nodes.values()})
    remote: list[dict[str, Any]] = [
        {
            "name": name,
            "tier": "edge-small",
            "context_length": min(n.spec.ctx for n in testbed.nodes.values()),
            "backends": [
                {
                    "dns": edge_service_name(testbed),
                    "port": 8080,
                    "resolve_interval_s": health_interval_s,
                    "model": name,
                    "connect_timeout_s": 1.0,
                }
            ],
        }
        for name in served
    ]
    if testbed.cloud is not None and testbed.cloud_url is not None:
        remote.append(
            {
                "name": "cloud",
                "tier": "cloud",
                "context_length": testbed.cloud.spec.ctx,
                "backends": [
                    {
                        "url": f"{testbed.cloud_url}/v1",
                        "model": testbed.cloud.served_name,
                        "connect_timeout_s": 2.0,
                        "first_token_timeout_s": 10.0,
                    }
                ],
            }
        )
    return {
        "models": [],
        "remote_models": remote,
        "policies": [{"name": "load", "kind": "load", "models": [m["name"] for m in remote]}],
        "router": {"default_policy": "load", "health_interval_s": health_interval_s},
    }


class GatewayProcess:
    def __init__(
        self, testbed: Testbed, config: dict[str, Any], *, port: int = 0, name: str = "gateway"
    ) -> None:
        self.testbed = testbed
        self.port = port or free_port()
        self.config = config | {"server": {"host": "127.0.0.1", "port": self.port}}
        self.config_path = testbed.log_dir / f"{name}.yaml"
        self.log_path = testbed.log_dir / f"{name}.log"
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> GatewayProcess:
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        cmd = [
            sys.executable,
            "-m",
            "edgellm",
            "serve",
            "--config",
            str(self.config_path),
            "--log-level",
            "warning",
        ]
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                self.testbed.resolver_view(cmd),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # Recorded so that `edgellm testbed down` finds it even if this harness is SIGKILLed.
        self.pid_path = record_pid(self.testbed.prefix, self.name, self.proc.pid)
        problem = wait_healthy(self.url, self.proc, timeout)
        if problem is not None:
            tail = self.tail()
            self.stop()
            raise TestbedError(f"gateway {problem}: {tail}")
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None
        if self.pid_path is not None:
            self.pid_path.unlink(missing_ok=True)

    def tail(self, lines: int = 20) -> str:
        return log_tail(self.log_path, lines)

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
