"""Energy and cost per request and per token, from resource samples and a device profile.

This is a *power model*, not a measurement: P(t) = idle + (busy - idle) * CPU utilisation(t)
of the device profile (see `devices.py`), integrated over each sampling interval. Each interval's
energy is shared equally by the requests in flight during it. Where Intel RAPL counters are
readable (`/sys/class/powercap/intel-rapl:*/energy_uj`), the host package energy of the whole run
is reported next to it, as a measured figure for the host (not for the emulated device).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from edgellm.bench.devices import DeviceProfile
from edgellm.bench.records import RequestRecord, ResourceSample

RAPL_ROOT = Path("/sys/class/powercap")


def read_rapl_uj(root: Path = RAPL_ROOT) -> int | None:
    """Sum of the package-level RAPL counters in microjoules, or None if not readable."""
    total, found = 0, False
    for zone in sorted(root.glob("intel-rapl:*")):
        if zone.name.count(":") != 1:
            continue  # sub-zones (core, uncore) are inside the package figure
        try:
            total += int((zone / "energy_uj").read_text())
            found = True
        except (OSError, ValueError):
            continue
    return total if found else None


class CostSettings(BaseModel):
    electricity_usd_per_kwh: float = 0.30
    cloud_usd_per_1k_tokens: float | None = None


class EnergySummary(BaseModel):
    model: str = "linear CPU-utilisation power model"
    device: str
    run_joules: float
    run_seconds: float
    mean_watts: float
    joules_per_request: float | None
    joules_per_token: float | None
    rapl_host_joules: float | None = None
    edge_usd_per_1k_tokens: float | None = None
    edge_energy_usd_per_1k_tokens: float | None = None
    edge_hardware_usd_per_1k_tokens: float | None = None
    cloud_usd_per_1k_tokens: float | None = None


def attribute_energy(
    records: Sequence[RequestRecord], samples: Sequence[ResourceSample], device: DeviceProfile
) -> float:
    """Set `energy_j` on each record; return the run's total modelled energy in joules."""
    for record in records:
        record.energy_j = 0.0
    windows = [(r, r.start_s, r.start_s + (r.e2e_s or 0.0)) for r in records if r.e2e_s is not None]
    total = 0.0
    for before, after in itertools.pairwise(samples):
        dt = after.t_s - before.t_s
        if dt <= 0:
            continue
        joules = device.power_watts(after.cpu_percent) * dt
        total += joules
        active = [r for r, start, end in windows if start < after.t_s and end > before.t_s]
        for record in active:
            record.energy_j = (record.energy_j or 0.0) + joules / len(active)
    return total


def energy_summary(
    records: Sequence[RequestRecord],
    samples: Sequence[ResourceSample],
    device: DeviceProfile,
    cost: CostSettings,
    rapl_joules: float | None = None,
) -> EnergySummary:
    measured = [r for r in records if not r.warmup]
    total = attribute_energy(measured, samples, device)
    seconds = samples[-1].t_s - samples[0].t_s if len(samples) > 1 else 0.0
    tokens = sum(r.completion_tokens or 0 for r in measured if r.ok)
    request_j = sum(r.energy_j or 0.0 for r in measured)
    summary = EnergySummary(
        device=device.name,
        run_joules=total,
        run_seconds=seconds,
        mean_watts=total / seconds if seconds > 0 else 0.0,
        joules_per_request=request_j / len(measured) if measured else None,
        joules_per_token=request_j / tokens if tokens else None,
        rapl_host_joules=rapl_joules,
        cloud_usd_per_1k_tokens=cost.cloud_usd_per_1k_tokens,
    )
    if tokens and seconds > 0:
        energy_usd = total / 3.6e6 * cost.electricity_usd_per_kwh
        hardware_usd = device.hardware_usd_per_second() * seconds
        summary.edge_energy_usd_per_1k_tokens = energy_usd / tokens * 1000
        summary.edge_hardware_usd_per_1k_tokens = hardware_usd / tokens * 1000
        summary.edge_usd_per_1k_tokens = (energy_usd + hardware_usd) / tokens * 1000
    return summary
