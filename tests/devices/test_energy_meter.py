"""EnergyMeter, the estimate sensor, and detect_devices on fake roots and on this machine."""

import threading
import time

import pytest

from device_fakes import replying
from edgert.devices import EnergyMeter, EstimatedSensor, PowerReading, Sensor, detect_devices, integrate
from edgert.errors import DeviceError, SensorUnavailable


class ConstantPower(Sensor):
    name = "fake:constant"

    def __init__(self, power_w):
        self.power_w = power_w

    def read(self):
        return self._reading(power_w=self.power_w)


class Counter(Sensor):
    """An energy counter that grows at a fixed rate with wall time."""

    name = "fake:counter"

    def __init__(self, power_w):
        self.power_w, self.t0 = power_w, time.monotonic()

    def read(self):
        return self._reading(energy_j=1000 + self.power_w * (time.monotonic() - self.t0))


def test_constant_power_integrates_to_power_times_time():
    with EnergyMeter(ConstantPower(10.0), interval_s=0.01) as meter:
        time.sleep(0.2)
    result = meter.result
    assert result.energy_j == pytest.approx(10.0 * result.duration_s, rel=1e-9)
    assert result.energy_j == pytest.approx(2.0, rel=0.25)
    assert result.avg_power_w == pytest.approx(10.0)
    assert result.samples >= 5 and result.provenance == "measured" and result.source == "fake:constant"


def test_counter_uses_difference():
    meter = EnergyMeter(Counter(5.0), interval_s=0.02)
    meter.start()
    time.sleep(0.1)
    result = meter.stop()
    assert result.avg_power_w == pytest.approx(5.0, rel=1e-3)


def test_trapezoid_on_a_ramp():
    samples = [PowerReading(float(t), None, "measured", "ramp", float(t)) for t in range(5)]
    assert integrate(samples).energy_j == pytest.approx(8.0)  # ∫0..4 t dt


def test_sensor_failure_surfaces_at_stop():
    class Flaky(ConstantPower):
        calls = 0

        def read(self):
            Flaky.calls += 1
            if Flaky.calls > 2:
                raise SensorUnavailable("rail vanished")
            return super().read()

    meter = EnergyMeter(Flaky(1.0), interval_s=0.01)
    meter.start()
    time.sleep(0.05)
    with pytest.raises(SensorUnavailable, match="rail vanished"):
        meter.stop()


def test_misuse_is_reported():
    meter = EnergyMeter(ConstantPower(1.0))
    with pytest.raises(DeviceError, match="not started"):
        meter.stop()
    with pytest.raises(DeviceError, match="positive"):
        EnergyMeter(ConstantPower(1.0), interval_s=0)


def test_estimate_formula():
    load = [0.0]
    sensor = EstimatedSensor(20.0, load=lambda: load[0])
    assert sensor.read().power_w == pytest.approx(2.0)
    load[0] = 0.5
    assert sensor.read().power_w == pytest.approx(20 * (0.1 + 0.9 * 0.125))
    load[0] = 1.7  # clamped
    reading = sensor.read()
    assert reading.power_w == pytest.approx(20.0)
    assert reading.provenance == "estimated" and reading.source == "estimate:tdp*(0.1+0.9*load^3)"
    with pytest.raises(DeviceError, match="positive TDP"):
        EstimatedSensor(0)


def test_estimate_integrates_too():
    with EnergyMeter(EstimatedSensor(10.0, load=lambda: 1.0), interval_s=0.01) as meter:
        time.sleep(0.05)
    assert meter.result.provenance == "estimated" and meter.result.avg_power_w == pytest.approx(10.0)


def test_detect_x86_laptop(fake_root):
    devices = detect_devices(fake_root("x86-laptop"), nvml=None, run=replying({}))
    assert [d.kind for d in devices] == ["cpu"]
    assert devices[0].sensors()[0].name == "rapl:package-0"


def test_detect_jetson_orin(fake_root):
    run = replying({("nvpmodel", "-q"): "NV Power Mode: 15W\n0\n"})
    devices = detect_devices(fake_root("jetson-orin-nano"), run=run)
    assert [d.kind for d in devices] == ["cpu", "jetson"]
    assert devices[0].info().name == "Cortex-A78AE" and devices[0].info().details["cores"] == 6
    assert devices[1].info().details["power_mode"] == "15W"
    assert devices[1].sensors()[0].name == "ina3221:VDD_IN"


def test_detect_raspberry_pi_5(fake_root):
    devices = detect_devices(fake_root("raspberry-pi-5"), run=replying({}))
    assert [d.kind for d in devices] == ["cpu", "raspberry-pi"]
    assert devices[1].info().name.startswith("Raspberry Pi 5")


def test_this_machine():
    notes = []
    devices = detect_devices(notes=notes)
    cpu = devices[0]
    assert cpu.kind == "cpu" and cpu.info().details["cores"] >= 1
    first = cpu.sensors()[0]
    assert first.provenance in ("measured", "estimated")
    reading = first.read()
    assert (reading.power_w or 0) > 0 or reading.energy_j is not None
    assert not any(t.name.startswith("energy-meter") for t in threading.enumerate())
