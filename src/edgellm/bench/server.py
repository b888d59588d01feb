"""Start a local EdgeLLM node as a subprocess for `edgellm bench` / `edgellm eval` without --url.

A separate process, so its CPU and memory are measured on their own (psutil by PID) and a
device profile can pin it to cores (CPU affinity) and cap its memory (cgroups, where writable).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from types import TracebackType

import psutil

from edgellm.bench.devices import DeviceProfile
from edgellm.config import EngineConfig
from edgellm.deploy.launch import free_port, node_command, served_model, wait_healthy


class LocalServerError(Exception):
    pass


def apply_profile(pid: int, profile: DeviceProfile) -> dict[str, object]:
    """Pin `pid` to the profile's core count and cap its memory; report what was applied."""
    applied: dict[str, object] = {"profile": profile.name}
    process = psutil.Process(pid)
    try:
        available = process.cpu_affinity() or []
        cores = available[: profile.cores]
        process.cpu_affinity(cores)
        applied["cpu_affinity"] = cores
        if len(available) < profile.cores:
            applied["cpu_note"] = (
                f"host has only {len(available)} CPUs, not the {profile.cores} of the device"
            )
    except (AttributeError, psutil.Error, OSError) as exc:
        applied["cpu_affinity_error"] = str(exc)
    applied |= _cap_memory(pid, int(profile.memory_gb * 1024**3), f"edgellm-{profile.name}-{pid}")
    return applied


def _cap_memory(pid: int, limit: int, name: str) -> dict[str, object]:
    """cgroup v2 (`memory.max`) or v1 (`memory.limit_in_bytes`); nothing if neither is writable."""
    candidates = [
        (Path("/sys/fs/cgroup") / name, "memory.max"),
        (Path("/sys/fs/cgroup/memory") / name, "memory.limit_in_bytes"),
    ]
    errors = []
    for directory, knob in candidates:
        try:
            if not directory.parent.joinpath("cgroup.procs").exists():
                continue
            directory.mkdir(exist_ok=True)
            (directory / knob).write_text(str(limit))
            (directory / "cgroup.procs").write_text(str(pid))
            return {"memory_cap_bytes": limit, "cgroup": str(directory)}
        except OSError as exc:
            errors.append(f"{directory}: {exc}")
    return {"memory_cap_bytes": None, "memory_cap_error": "; ".join(errors) or "no cgroup fs"}


def release_cgroup(applied: dict[str, object]) -> None:
    """Remove the cgroup `apply_profile` made, once its process has exited."""
    path = applied.get("cgroup")
    if isinstance(path, str):
        with contextlib.suppress(OSError):
            Path(path).rmdir()


class LocalServer:
    """`with LocalServer("smollm2-135m-instruct") as server: server.url ...`"""

    def __init__(
        self,
        model: str,
        *,
        threads: int = 0,
        ctx: int = 4096,
        profile: DeviceProfile | None = None,
        log_path: Path | None = None,
        startup_timeout_s: float = 180.0,
    ) -> None:
        self.model = model
        self.threads = threads
        self.ctx = ctx
        self.profile = profile
        self.log_path = log_path
        self.startup_timeout_s = startup_timeout_s
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.profile_applied: dict[str, object] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise LocalServerError("server not started")
        return self.process.pid

    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        threads = self.threads
        if self.profile is not None and threads == 0:
            threads = min(self.profile.cores, os.cpu_count() or 1)
        model = served_model(self.model, engine=EngineConfig(n_threads=threads, n_ctx=self.ctx))
        cmd = node_command(model, port=self.port)
        log = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        if self.profile is not None:
            self.profile_applied = apply_profile(self.process.pid, self.profile)
        problem = wait_healthy(self.url, self.process, self.startup_timeout_s)
        if problem is not None:
            self.stop()
            see = f"; see {self.log_path}" if self.log_path else ""
            raise LocalServerError(f"edgellm node {problem}{see}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        release_cgroup(self.profile_applied)
