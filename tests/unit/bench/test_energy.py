from __future__ import annotations

from pathlib import Path

import pytest

from edgellm.bench.devices import get_profile
from edgellm.bench.energy import CostSettings, energy_summary, read_rapl_uj
from edgellm.bench.records import RequestRecord, ResourceSample


def _sample(t: float, cpu: float) -> ResourceSample:
    return ResourceSample(t_s=t, source="pid:1", cpu_percent=cpu, rss_bytes=1)


def test_rpi5_power_model() -> None:
    rpi5 = get_profile("rpi5")
    assert rpi5.power_watts(0) == pytest.approx(2.7)
    assert rpi5.power_watts(400) == pytest.approx(7.0)  # 4 cores busy
    assert rpi5.power_watts(200) == pytest.approx(2.7 + 4.3 / 2)
    assert rpi5.power_watts(900) == pytest.approx(7.0)  # clamped


def test_energy_is_shared_by_overlapping_requests() -> None:
    rpi5 = get_profile("rpi5")
    # two 1-s intervals at 0 % and 400 % CPU: 2.7 J then 7.0 J
    samples = [_sample(0, 0), _sample(1, 0), _sample(2, 400)]
    a = RequestRecord(request_id=0, model="m", start_s=0.0, e2e_s=2.0, completion_tokens=10)
    b = RequestRecord(request_id=1, model="m", start_s=1.5, e2e_s=0.4, completion_tokens=10)
    s = energy_summary([a, b], samples, rpi5, CostSettings(electricity_usd_per_kwh=0.36))
    assert s.run_joules == pytest.approx(9.7)
    assert a.energy_j == pytest.approx(2.7 + 3.5) and b.energy_j == pytest.approx(3.5)
    assert s.joules_per_token == pytest.approx(9.7 / 20)
    assert s.edge_energy_usd_per_1k_tokens == pytest.approx(9.7 / 3.6e6 * 0.36 / 20 * 1000)
    hardware = 80 / (3 * 365.25 * 86400) * 2
    assert s.edge_hardware_usd_per_1k_tokens == pytest.approx(hardware / 20 * 1000)


def test_rapl_reads_package_zones_only(tmp_path: Path) -> None:
    assert read_rapl_uj(tmp_path) is None
    for zone, value in (("intel-rapl:0", 100), ("intel-rapl:1", 50), ("intel-rapl:0:0", 7)):
        (tmp_path / zone).mkdir()
        (tmp_path / zone / "energy_uj").write_text(str(value))
    assert read_rapl_uj(tmp_path) == 150
