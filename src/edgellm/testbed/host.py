"""Thin wrappers over `ip` and `tc`: every host change the testbed makes goes through here."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess

log = logging.getLogger(__name__)


class TestbedError(RuntimeError):
    __test__ = False


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    log.debug("+ %s", " ".join(args))
    proc = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    if check and proc.returncode != 0:
        raise TestbedError(f"{' '.join(args)} failed: {proc.stderr.strip() or proc.returncode}")
    return proc


def unavailable_reason() -> str | None:
    """Why this host cannot run a testbed, or None when it can."""
    if os.geteuid() != 0:
        return "the testbed needs root (network namespaces, veth pairs, cgroups)"
    for tool, package in (("ip", "iproute2"), ("tc", "iproute2"), ("unshare", "util-linux")):
        if shutil.which(tool) is None:
            return f"`{tool}` ({package}) is not installed"
    probe = run("ip", "netns", "list", check=False)
    if probe.returncode != 0:
        return f"`ip netns` is unavailable: {probe.stderr.strip()}"
    return None


def netns_list() -> list[str]:
    out = run("ip", "netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def netns_pids(ns: str) -> list[int]:
    out = run("ip", "netns", "pids", ns, check=False).stdout
    return [int(p) for p in out.split()]


def link_names() -> list[str]:
    out = run("ip", "-j", "link", "show").stdout
    return [str(link["ifname"]) for link in json.loads(out or "[]")]


def routes() -> list[str]:
    out = run("ip", "-j", "-4", "route", "show", "table", "all").stdout
    return [str(r["dst"]) for r in json.loads(out or "[]") if "dst" in r]


def in_ns(ns: str, *args: str) -> tuple[str, ...]:
    return ("ip", "netns", "exec", ns, *args)


def netem_available() -> bool:
    """Whether the kernel has sch_netem: try it on a throw-away dummy link."""
    probe = "eltbprobe0"
    run("ip", "link", "del", probe, check=False)
    if run("ip", "link", "add", probe, "type", "dummy", check=False).returncode != 0:
        return False
    try:
        return (
            run(
                "tc", "qdisc", "add", "dev", probe, "root", "netem", "delay", "1ms", check=False
            ).returncode
            == 0
        )
    finally:
        run("ip", "link", "del", probe, check=False)
