"""A thin layer over the container engine's CLI (podman, or docker where its daemon answers), with
the project's own settings (deploy/image/env.sh: containers.conf with runc and ulimits)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
IMAGE_DIR = ROOT / "deploy" / "image"
CONTAINER_CA = "/etc/ssl/certs/ca-certificates.crt"


def pick_engine() -> tuple[str | None, str]:
    """(engine, why not): docker when its daemon answers, else podman when it runs a container."""
    forced = os.environ.get("ENGINE")
    candidates = [forced] if forced else ["docker", "podman"]
    reasons = []
    for name in candidates:
        if shutil.which(name) is None:
            reasons.append(f"{name} is not installed")
            continue
        try:
            info = subprocess.run(
                [name, "info"], env=engine_env(name), capture_output=True, timeout=30
            )
        except subprocess.TimeoutExpired:
            reasons.append(f"`{name} info` did not answer in 30 s")
            continue
        if info.returncode == 0:
            return name, ""
        reasons.append(f"`{name} info` failed: {info.stderr.decode(errors='replace')[-200:]}")
    return None, "; ".join(reasons)


def engine_env(engine: str) -> dict[str, str]:
    env = dict(os.environ)
    if engine == "podman":
        env.setdefault("CONTAINERS_CONF", str(IMAGE_DIR / "containers.conf"))
    return env


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class Engine:
    name: str

    def run(
        self, *args: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [self.name, *args],
            env=engine_env(self.name),
            # conmon writes an `oom` file into its working directory when the kernel kills a
            # container for memory: not into the checkout
            cwd=tempfile.gettempdir(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"`{self.name} {' '.join(args)}` exited {done.returncode}: {done.stderr[-2000:]}"
            )
        return done

    def host_port(self, container: str, port: int = 8080) -> int:
        out = self.run("port", container, f"{port}/tcp").stdout.strip().splitlines()[0]
        return int(out.rsplit(":", 1)[1])

    def logs(self, container: str) -> str:
        done = self.run("logs", "--tail", "60", container, check=False)
        return done.stdout + done.stderr

    def remove(self, *containers: str) -> None:
        if containers:
            self.run("rm", "-f", "-t", "2", *containers, check=False)

    @contextlib.contextmanager
    def network(self) -> Iterator[str]:
        name = unique("edgellm-test")
        self.run("network", "create", name)
        try:
            yield name
        finally:
            self.run("network", "rm", "-f", name, check=False)

    def exists(self, container: str) -> bool:
        return self.run("container", "exists", container, check=False).returncode == 0

    def rss_bytes(self, container: str) -> int:
        """The container's memory use as its cgroup counts it (`stats`)."""
        out = self.run("stats", "--no-stream", "--format", "{{.MemUsage}}", container).stdout
        used = out.strip().split("/")[0].strip()
        return parse_size(used)


def parse_size(text: str) -> int:
    units = {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9, "KiB": 1024, "MiB": 1024**2,
             "GiB": 1024**3}  # fmt: skip
    number = text.rstrip("kKMGiB")
    unit = text[len(number) :]
    return int(float(number) * units[unit or "B"])


def wait_healthy(engine: Engine, container: str, url: str, timeout: float = 240) -> float:
    """Seconds until GET url/health answered 200; fails (with the container's log) after
    `timeout` or when the container exits."""
    start = time.monotonic()
    with httpx.Client(timeout=3) as client:
        while time.monotonic() - start < timeout:
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{url}/health").status_code == 200:
                    return time.monotonic() - start
            state = engine.run(
                "inspect", "--format", "{{.State.Status}}", container, check=False
            ).stdout.strip()
            if state in {"exited", "stopped", ""}:
                raise AssertionError(f"{container} is {state or 'gone'}:\n{engine.logs(container)}")
            time.sleep(0.2)
    raise AssertionError(f"{container} not healthy in {timeout} s:\n{engine.logs(container)}")
