"""On a real GPU / Jetson / machine with power sensors: profile it, check the sensors, write a report."""

import json
import time
from pathlib import Path

import pytest

from edgert.bundle import pack
from edgert.devices import EnergyMeter, detect_devices
from edgert.profiler.measure import choose_device, profile_device
from edgert.profiler.plot import roofline_png
from edgert.runners.llama_cpp import gpu_offload_supported

REPORTS = Path(__file__).parent / "reports"


def _device():
    return choose_device(detect_devices(), gpu_offload_supported())


@pytest.fixture(scope="module")
def measured_sensor():
    device = _device()
    sensor = device.sensors()[0]
    if sensor.provenance != "measured":
        pytest.skip(f"no measured power sensor on this {device.kind}: {'; '.join(device.sensor_problems) or 'none found'}")
    return device, sensor


def test_sensor_readings_are_plausible(measured_sensor):
    device, sensor = measured_sensor
    with EnergyMeter(sensor, interval_s=0.05) as meter:
        time.sleep(1.0)
    result = meter.result
    tdp = device.info().details.get("tdp_w") or device.info().details.get("power_limit_w") or 1000
    assert 0 < result.avg_power_w < 2 * tdp, f"average power {result.avg_power_w:.1f} W for a {tdp} W device"
    assert result.energy_j == pytest.approx(result.avg_power_w * result.duration_s, rel=0.05)
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / "sensor.json").write_text(json.dumps({"device": device.info().to_dict(), "sensor": sensor.name,
                                                     "idle_power_w": result.avg_power_w}, indent=2))


def test_quick_profile_of_this_device(tmp_path, device_model):
    bundle = pack([device_model], tmp_path / "bundle")
    profile = profile_device(bundle, quick=True)
    REPORTS.mkdir(exist_ok=True)
    profile.save(REPORTS / "profile.json")
    roofline_png(profile, REPORTS / "roofline.png")
    variant = next(iter(profile.variants.values()))
    held = variant.fit_error["decode_held_out"]
    (REPORTS / "profile-summary.json").write_text(json.dumps({
        "device": profile.device, "sensor": profile.sensor, "fit_error": variant.fit_error, "energy": variant.energy,
    }, indent=2))
    assert held["mape_pct"] < 15
    assert variant.energy["decode_j_per_token"] > 0
