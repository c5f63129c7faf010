"""Jetson: model, L4T release, power mode, clocks, and the INA3221/INA238 rails in both layouts."""

import pytest

from device_fakes import replying
from edgert.devices import JetsonDevice, discover_rails
from edgert.devices.jetson import parse_nvpmodel_query, parse_tegra_release, rail_sensors

NVPMODEL_Q = "NV Power Mode: 15W\n0\n"


def test_orin_hwmon_rails_total_first(fake_root):
    device = JetsonDevice(fake_root("jetson-orin-nano"), run=replying({}))
    sensors = device.sensors()
    assert [s.name for s in sensors] == [
        "ina3221:VDD_IN", "ina3221:VDD_CPU_GPU_CV", "ina3221:VDD_SOC", sensors[-1].name]
    total = sensors[0].read()
    assert total.provenance == "measured" and total.energy_j is None
    assert total.power_w == pytest.approx(5.072 * 1.224)
    assert sensors[1].read().power_w == pytest.approx(5.064 * 0.312)
    assert sensors[-1].provenance == "estimated"


def test_orin_rails_found_once_through_both_sysfs_paths(fake_root):
    rails = discover_rails(fake_root("jetson-orin-nano"))
    assert [r.name for r in rails] == ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]


def test_r32_iio_layout_reads_in_power_mw(fake_root):
    sensors = JetsonDevice(fake_root("jetson-nano-r32"), run=replying({})).sensors()
    assert [s.name for s in sensors[:3]] == ["ina3221:POM_5V_IN", "ina3221:POM_5V_CPU", "ina3221:POM_5V_GPU"]
    assert sensors[0].read().power_w == pytest.approx(2.584)
    assert sensors[1].read().power_w == pytest.approx(0.480)


def test_r32_iio_layout_without_power_file_multiplies_v_and_i(fake_root):
    root = fake_root("jetson-nano-r32")
    (root / "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0/in_power0_input").unlink()
    rails = discover_rails(root)
    assert rails[0].read_w() == pytest.approx(5.056 * 0.512)


def test_ina238_power_input_in_microwatts(fake_root):
    sensors = rail_sensors(discover_rails(fake_root("hwmon-ina238")))
    assert [s.name for s in sensors] == ["ina238:VDD_IN"]
    assert sensors[0].read().power_w == pytest.approx(29.99)


def test_without_a_total_rail_the_first_sensor_is_the_sum(fake_root):
    root = fake_root("jetson-orin-nano")
    hwmon = root / "sys/devices/platform/bus@0/c240000.i2c/i2c-1/1-0040/hwmon/hwmon1"
    (hwmon / "in1_label").write_text("NC\n")  # an unconnected channel, as on AGX Orin
    sensors = JetsonDevice(root, run=replying({})).sensors()
    assert sensors[0].name == "ina3221:sum(VDD_CPU_GPU_CV+VDD_SOC)"
    assert sensors[0].read().power_w == pytest.approx(5.064 * 0.312 + 5.064 * 0.560)


def test_info_model_release_power_mode_clocks(fake_root):
    run = replying({("nvpmodel", "-q"): NVPMODEL_Q})
    info = JetsonDevice(fake_root("jetson-orin-nano"), run=run).info()
    assert info.kind == "jetson" and info.name == "NVIDIA Jetson Orin Nano Developer Kit"
    details = info.details
    assert details["l4t_release"] == "36.4.3"
    assert details["power_mode"] == "15W" and details["power_mode_id"] == 0 and details["tdp_w"] == 15
    assert details["clocks_mhz"] == {"gpu": 306, "gpu_max": 625, "emc": 2133, "cpu_max": 1510.4}
    assert details["memory_bytes"] == 7620400 * 1024


def test_power_mode_from_status_file_when_nvpmodel_is_missing(fake_root):
    device = JetsonDevice(fake_root("jetson-orin-nano"), run=replying({}))
    assert device.power_mode() == {"power_mode_id": 0}


def test_estimate_uses_the_power_mode_tdp(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text("# R35 (release), REVISION: 4.1, GCID: 1, BOARD: t186ref\n")
    device = JetsonDevice(tmp_path, run=replying({("nvpmodel", "-q"): "NV Power Mode: MODE_30W\n3\n"}))
    sensors = device.sensors()
    assert len(sensors) == 1 and sensors[0].tdp_w == 30 and sensors[0].tdp_source == "device"
    assert "no power monitor rails" in device.sensor_problems[0]
    assert device.info().name == "NVIDIA Jetson (L4T 35.4.1)"


@pytest.mark.parametrize("text, expected", [
    (NVPMODEL_Q, {"power_mode": "15W", "power_mode_id": 0}),
    ("NV Fan Mode:quiet\nNV Power Mode: MAXN_SUPER\n2\n", {"power_mode": "MAXN_SUPER", "power_mode_id": 2}),
    ("garbage", {}),
])
def test_parse_nvpmodel_query(text, expected):
    assert parse_nvpmodel_query(text) == expected


def test_parse_tegra_release():
    assert parse_tegra_release("# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref") == "32.7.1"
    assert parse_tegra_release("nothing here") is None
