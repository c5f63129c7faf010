"""Raspberry Pi 5: model from the device tree, PMIC rails through a faked vcgencmd."""

import pytest

from device_fakes import SYSFS, replying
from edgert.devices import PmicSensor, RaspberryPi
from edgert.devices.raspberrypi import parse_pmic_adc
from edgert.errors import SensorUnavailable

PMIC_TEXT = (SYSFS / "raspberry-pi-5" / "vcgencmd_pmic_read_adc.txt").read_text()
PMIC = ("vcgencmd", "pmic_read_adc")


def test_parse_pairs_rails_by_name():
    amps, volts = parse_pmic_adc(PMIC_TEXT)
    assert len(amps) == 12 and len(volts) == 14
    assert amps["VDD_CORE"] == pytest.approx(2.4317) and volts["VDD_CORE"] == pytest.approx(0.86)
    assert "EXT5V" in volts and "EXT5V" not in amps


def test_pmic_sensor_sums_v_times_i():
    amps, volts = parse_pmic_adc(PMIC_TEXT)
    expected = sum(amps[r] * volts[r] for r in amps)
    reading = PmicSensor(replying({PMIC: PMIC_TEXT})).read()
    assert reading.power_w == pytest.approx(expected) and reading.power_w == pytest.approx(3.6206, abs=1e-3)
    assert reading.provenance == "measured" and reading.source == "pmic:sum(V*I)"


def test_device_info_and_sensors(fake_root):
    device = RaspberryPi(fake_root("raspberry-pi-5"), run=replying({PMIC: PMIC_TEXT}))
    info = device.info()
    assert info.kind == "raspberry-pi" and info.name == "Raspberry Pi 5 Model B Rev 1.0"
    assert info.details["cpu"] == "Cortex-A76" and info.details["cores"] == 4
    assert info.details["simd"] == ["asimd", "fphp", "asimdhp", "asimddp"]
    assert info.details["max_freq_mhz"] == 2400 and info.details["memory_bytes"] == 8245232 * 1024
    assert [s.provenance for s in device.sensors()] == ["measured", "estimated"]


def test_without_vcgencmd_the_estimate_remains(fake_root):
    device = RaspberryPi(fake_root("raspberry-pi-5"), run=replying({}))
    assert [s.provenance for s in device.sensors()] == ["estimated"]
    assert "vcgencmd pmic_read_adc" in device.sensor_problems[0]


def test_older_firmware_output_is_unavailable():
    with pytest.raises(SensorUnavailable, match="expected rail lines"):
        PmicSensor(replying({PMIC: "error=1 error_msg=\"Command not registered\"\n"}))
