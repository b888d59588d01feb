from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

from edgellm.bench.devices import DeviceProfile, get_profile
from edgellm.bench.resources import PhaseTracker, ResourceSampler, pid_probe
from edgellm.bench.server import apply_profile, release_cgroup


def test_phase_tracker_prefill_then_decode() -> None:
    phases = PhaseTracker()
    assert phases.snapshot() == (0, "idle")
    phases.start(1)
    phases.start(2)
    phases.first_token(1)
    assert phases.snapshot() == (2, "prefill")  # request 2 still waits for its first token
    phases.first_token(2)
    assert phases.snapshot() == (2, "decode")
    phases.end(1)
    phases.end(2)
    assert phases.snapshot() == (0, "idle")


def test_pid_sampling_sees_a_busy_child() -> None:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        phases = PhaseTracker()
        phases.start(7)
        sampler = ResourceSampler(pid_probe(busy.pid), f"pid:{busy.pid}", phases, 0.1).start()
        time.sleep(0.8)
        samples = sampler.stop()
    finally:
        busy.kill()
        busy.wait()
    assert len(samples) >= 3
    assert max(s.cpu_percent for s in samples) > 20  # generous: the machine is shared
    assert all(s.rss_bytes > 1_000_000 and s.phase == "prefill" for s in samples)


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="CPU affinity is Linux-only")
def test_profile_pins_cores_and_reports_the_memory_cap_outcome() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    applied: dict[str, object] = {}
    try:
        one_core = DeviceProfile(
            name="tiny",
            description="t",
            cores=1,
            memory_gb=1,
            idle_watts=1,
            busy_watts=2,
            price_usd=1,
        )
        applied = apply_profile(child.pid, one_core)
        assert applied["cpu_affinity"] == psutil.Process(child.pid).cpu_affinity()
        assert len(psutil.Process(child.pid).cpu_affinity()) == 1
        # either a cgroup took the cap or the reason it could not is recorded
        assert applied["memory_cap_bytes"] == 1024**3 or applied["memory_cap_error"]
    finally:
        child.kill()
        child.wait()
        release_cgroup(applied)


def test_unknown_profile_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="rpi5"):
        get_profile("rpi9")
