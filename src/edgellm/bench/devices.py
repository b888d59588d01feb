"""Device profiles: the cores, memory, power and price of an edge device.

They serve two purposes, both documented as models, not measurements of the device:
- **emulation** (`--profile`): the serving process is pinned to the device's number of cores
  (CPU affinity) and, where cgroups are writable, capped to its memory, so a larger host
  behaves a little more like the device. Per-core speed, memory bandwidth and thermals are
  *not* emulated.
- **energy and cost**: a linear power model P = idle + (busy - idle) * CPU utilisation, and
  the device's price amortised over its lifetime.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class DeviceProfile(BaseModel):
    name: str
    description: str
    cores: int = Field(ge=1)
    memory_gb: float = Field(gt=0)
    idle_watts: float = Field(ge=0)
    busy_watts: float = Field(ge=0, description="all cores busy")
    price_usd: float = Field(ge=0)
    lifetime_years: float = Field(3.0, gt=0)
    power_source: str = ""

    def power_watts(self, cpu_percent: float) -> float:
        """cpu_percent as psutil reports it: 100 = one core busy."""
        utilisation = min(1.0, max(0.0, cpu_percent / (100.0 * self.cores)))
        return self.idle_watts + (self.busy_watts - self.idle_watts) * utilisation

    def hardware_usd_per_second(self) -> float:
        return self.price_usd / (self.lifetime_years * 365.25 * 24 * 3600)


PROFILES: dict[str, DeviceProfile] = {
    p.name: p
    for p in (
        DeviceProfile(
            name="rpi5",
            description="Raspberry Pi 5, 8 GB (Cortex-A76 x4 @ 2.4 GHz)",
            cores=4,
            memory_gb=8,
            idle_watts=2.7,
            busy_watts=7.0,
            price_usd=80,
            power_source="board power at the USB-C input: ~2.7 W idle, ~7 W with all cores "
            "busy (published stress-ng measurements of the Pi 5; no fan, no peripherals)",
        ),
        DeviceProfile(
            name="rpi4",
            description="Raspberry Pi 4 Model B, 4 GB (Cortex-A72 x4 @ 1.8 GHz)",
            cores=4,
            memory_gb=4,
            idle_watts=2.7,
            busy_watts=6.4,
            price_usd=55,
            power_source="published stress measurements of the Pi 4B at the USB-C input",
        ),
        DeviceProfile(
            name="jetson-orin-nano",
            description="NVIDIA Jetson Orin Nano 8 GB, CPU only (Cortex-A78AE x6)",
            cores=6,
            memory_gb=8,
            idle_watts=5.0,
            busy_watts=15.0,
            price_usd=250,
            power_source="NVIDIA's 7-15 W power modes; idle estimated",
        ),
        DeviceProfile(
            name="mini-pc",
            description="x86 mini PC (4 cores, 16 GB), e.g. an Intel N100 box",
            cores=4,
            memory_gb=16,
            idle_watts=6.0,
            busy_watts=20.0,
            price_usd=180,
            power_source="typical wall-power figures for N100 mini PCs",
        ),
    )
}


def get_profile(name: str) -> DeviceProfile:
    if name not in PROFILES:
        raise KeyError(f"unknown device profile '{name}'; choose from {', '.join(PROFILES)}")
    return PROFILES[name]
