"""CPU description and RAPL energy counters against a fake x86 laptop tree."""

import pytest

from edgert.devices import CpuDevice, RaplSensor, RaplZone, rapl_sensors
from edgert.devices.base import ESTIMATE_FORMULA
from edgert.errors import SensorUnavailable

PACKAGE = "sys/devices/virtual/powercap/intel-rapl/intel-rapl:0"
MAX_RANGE_UJ = 262143328850


def test_cpu_info_from_cpuinfo_and_sysfs(fake_root):
    info = CpuDevice(fake_root("x86-laptop")).info()
    assert info.kind == "cpu" and info.vendor == "Intel"
    assert info.name == "12th Gen Intel(R) Core(TM) i7-1260P"
    assert info.details["cores"] == 2 and info.details["threads"] == 4
    assert info.details["simd"] == ["sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni"]
    assert info.details["governor"] == "powersave"
    assert info.details["max_freq_mhz"] == 4700
    assert info.details["memory_bytes"] == 16106512 * 1024
    assert info.to_dict()["details"]["threads"] == 4


def test_sensors_package_first_then_psys_and_subzones_each_zone_once(fake_root):
    sensors = CpuDevice(fake_root("x86-laptop")).sensors()
    assert [s.name for s in sensors[:4]] == ["rapl:package-0", "rapl:psys", "rapl:core", "rapl:uncore"]
    assert sensors[-1].provenance == "estimated" and len(sensors) == 5
    reading = sensors[0].read()
    assert reading.provenance == "measured" and reading.source == "rapl:package-0"
    assert reading.energy_j == pytest.approx(24863.124569) and reading.power_w is None


def test_counter_wraparound_stays_monotonic(fake_root):
    root = fake_root("x86-laptop")
    counter = root / PACKAGE / "energy_uj"
    counter.write_text(f"{MAX_RANGE_UJ - 1_000_000}\n")  # 1 J before the wrap
    sensor = RaplSensor([RaplZone(root / PACKAGE)])
    before = sensor.read().energy_j
    counter.write_text("2500000\n")  # wrapped, then 2.5 J more
    after = sensor.read().energy_j
    assert after - before == pytest.approx(3.5)
    counter.write_text("4500000\n")
    assert sensor.read().energy_j - before == pytest.approx(5.5)


def _denying(path_part):
    def opener(path, mode="r", *args, **kwargs):
        if path_part in str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return open(path, mode, *args, **kwargs)

    return opener


def test_permission_denied_is_sensor_unavailable_with_reason(fake_root):
    root = fake_root("x86-laptop")
    with pytest.raises(SensorUnavailable, match=r"energy_uj is not readable.*root-only since Linux 5.10"):
        rapl_sensors(root, opener=_denying("energy_uj"))


def test_permission_denied_falls_back_to_estimate(fake_root):
    device = CpuDevice(fake_root("x86-laptop"), opener=_denying("energy_uj"))
    sensors = device.sensors(tdp_w=28)
    assert len(sensors) == 1 and sensors[0].provenance == "estimated"
    assert "root-only" in device.sensor_problems[0]
    assert sensors[0].read().source == ESTIMATE_FORMULA


def test_no_powercap_falls_back_to_estimate(tmp_path):
    device = CpuDevice(tmp_path)
    sensors = device.sensors()
    assert [s.provenance for s in sensors] == ["estimated"]
    assert "no RAPL zones" in device.sensor_problems[0]
    assert device.info().details["threads"] >= 1  # falls back to os.cpu_count()


def test_garbage_counter_is_reported(fake_root):
    root = fake_root("x86-laptop")
    (root / PACKAGE / "energy_uj").write_text("n/a\n")
    sensor = RaplSensor([RaplZone(root / "sys/devices/virtual/powercap/intel-rapl/intel-rapl:1")])
    assert sensor.read().energy_j > 0
    with pytest.raises(SensorUnavailable, match="microjoule"):
        RaplZone(root / PACKAGE)
