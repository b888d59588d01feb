"""CPU share and memory cap for a node process: cgroup v2 where its controllers are enabled,
else the v1 cpu and memory hierarchies (hybrid hosts such as this CI machine)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
CFS_PERIOD_US = 100_000


@dataclass(frozen=True)
class Limits:
    cpus: float | None
    memory_mb: int | None


class CgroupBackend:
    """Creates a group `name`, writes the limits and moves `pid` into it."""

    name = "none"

    def confine(self, group: str, pid: int, limits: Limits) -> list[Path]:
        return []


class CgroupV2(CgroupBackend):
    name = "cgroup2"

    def __init__(self, root: Path) -> None:
        self.root = root

    def confine(self, group: str, pid: int, limits: Limits) -> list[Path]:
        path = self.root / group
        path.mkdir(exist_ok=True)
        if limits.cpus is not None:
            quota = max(1000, int(limits.cpus * CFS_PERIOD_US))
            (path / "cpu.max").write_text(f"{quota} {CFS_PERIOD_US}")
        if limits.memory_mb is not None:
            (path / "memory.max").write_text(str(limits.memory_mb * 1024 * 1024))
        (path / "cgroup.procs").write_text(str(pid))
        return [path]


class CgroupV1(CgroupBackend):
    name = "cgroup1"

    def confine(self, group: str, pid: int, limits: Limits) -> list[Path]:
        paths = []
        if limits.cpus is not None:
            cpu = CGROUP_ROOT / "cpu" / group
            cpu.mkdir(exist_ok=True)
            (cpu / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
            (cpu / "cpu.cfs_quota_us").write_text(str(max(1000, int(limits.cpus * CFS_PERIOD_US))))
            (cpu / "cgroup.procs").write_text(str(pid))
            paths.append(cpu)
        if limits.memory_mb is not None:
            mem = CGROUP_ROOT / "memory" / group
            mem.mkdir(exist_ok=True)
            (mem / "memory.limit_in_bytes").write_text(str(limits.memory_mb * 1024 * 1024))
            (mem / "cgroup.procs").write_text(str(pid))
            paths.append(mem)
        return paths


def _v2_root() -> Path | None:
    for root in (CGROUP_ROOT, CGROUP_ROOT / "unified"):
        controllers = root / "cgroup.controllers"
        if not controllers.exists():
            continue
        available = controllers.read_text().split()
        if {"cpu", "memory"} <= set(available):
            enabled = (root / "cgroup.subtree_control").read_text().split()
            if not {"cpu", "memory"} <= set(enabled):
                with contextlib.suppress(OSError):
                    (root / "cgroup.subtree_control").write_text("+cpu +memory")
            return root
    return None


def detect() -> CgroupBackend:
    root = _v2_root()
    if root is not None:
        return CgroupV2(root)
    if (CGROUP_ROOT / "cpu" / "cpu.cfs_quota_us").exists() and (
        CGROUP_ROOT / "memory" / "memory.limit_in_bytes"
    ).exists():
        return CgroupV1()
    log.warning("no usable cgroup hierarchy: nodes run without CPU or memory limits")
    return CgroupBackend()


def group_dirs(prefix: str) -> list[Path]:
    """Every cgroup directory this testbed prefix may have created, in any hierarchy."""
    found: list[Path] = []
    for parent in (
        CGROUP_ROOT,
        CGROUP_ROOT / "unified",
        CGROUP_ROOT / "cpu",
        CGROUP_ROOT / "memory",
    ):
        if parent.is_dir():
            found.extend(p for p in parent.glob(f"{prefix}-*") if p.is_dir())
    return found


def remove_groups(prefix: str) -> None:
    for path in group_dirs(prefix):
        procs = path / "cgroup.procs"
        for _ in range(50):
            with contextlib.suppress(OSError):
                pids = [int(p) for p in procs.read_text().split()]
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            try:
                path.rmdir()
                break
            except OSError:
                time.sleep(0.05)
        else:
            log.warning("could not remove cgroup %s", path)
