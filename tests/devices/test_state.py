"""Device state (clocks, temperatures, throttling, power mode) on the fake trees and a fake NVML,
and the latency correction that keeps one set of corrections per state."""

from pathlib import Path

import pytest
from device_fakes import SYSFS, NVMLError_NotSupported, fake_nvml, replying

from edgert.devices.state import DeviceState, StateReader, read_state, state_changes
from edgert.profiler.online import LatencyCorrector
from edgert.runners.types import StepRecord


def bump_throttle_count(root: Path, cpu: int = 0, to: int = 3) -> None:
    (root / f"sys/devices/system/cpu/cpu{cpu}/thermal_throttle/core_throttle_count").write_text(f"{to}\n")


def test_x86_laptop_reads_clocks_governor_temperatures_and_counters(fake_root):
    state = StateReader(fake_root("x86-laptop"), nvml=False).read()
    assert state.cpu_freq_mhz == 2075.0  # mean of 2.1, 2.3, 1.9 and 2.0 GHz
    assert state.cpu_governor == "powersave"
    assert state.temperatures_c == {"acpitz": 45.0, "x86_pkg_temp": 62.0}
    assert state.cpu_throttle_count == 0 and state.cpu_throttled is False
    assert state.slowdowns() == [] and state.key() == "governor=powersave"
    assert state.unreadable == {}


def test_a_throttle_event_marks_a_throttled_state_for_the_hold_time(fake_root):
    root = fake_root("x86-laptop")
    reader = StateReader(root, nvml=False)
    calm = reader.read()
    bump_throttle_count(root)
    hot = reader.read()
    assert hot.cpu_throttled and hot.slowdowns() == ["cpu:thermal_throttle"]
    assert hot.key() != calm.key() and "slowdown=cpu:thermal_throttle" in hot.key()
    assert reader.read().cpu_throttled  # no new event, still within the hold time
    reader.throttle_hold_s = 0.0
    assert reader.read().key() == calm.key()
    assert state_changes(calm.to_dict(), hot.to_dict()) == [
        f"device state changed from {calm.key()} to {hot.key()}", "CPU thermal throttling: the throttle count rose by 3"]
    assert state_changes(calm.to_dict(), calm.to_dict()) == []


def test_jetson_power_mode_and_jetson_clocks_inferred_from_pinned_clocks(fake_root):
    root = fake_root("jetson-orin-nano")
    state = StateReader(root, nvml=False).read()
    assert state.power_mode == "0" and state.jetson_clocks is False
    assert state.cpu_freq_mhz == 729.6 and state.temperatures_c["tj-thermal"] == 48.9
    for cpu in range(6):  # what jetson_clocks does: every minimum clock raised to the maximum
        (root / f"sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_min_freq").write_text("1510400\n")
    (root / "sys/class/devfreq/17000000.ga10b/min_freq").write_text("625000000\n")
    pinned = StateReader(root, nvml=False).read()
    assert pinned.jetson_clocks is True
    assert "jetson_clocks=on" in pinned.key() and "jetson_clocks=off" in state.key()
    (root / "var/lib/nvpmodel/status").write_text("pmode:0002\n")
    assert StateReader(root, nvml=False).read().key().startswith("mode=2;")


def test_raspberry_pi_firmware_throttling_and_a_missing_vcgencmd(fake_root):
    root = fake_root("raspberry-pi-5")
    calls = []

    def run(argv):
        calls.append(tuple(argv))
        return "throttled=0x50005\n"  # under-voltage and throttled now (bits 0, 2), and since boot

    reader = StateReader(root, nvml=False, run=run)
    state = reader.read()
    assert state.board_throttle == ["under_voltage", "throttled"]
    assert state.slowdowns() == ["board:throttled"]
    reader.read()
    assert calls == [("vcgencmd", "get_throttled")]  # a subprocess: reused within a second
    assert (SYSFS / "raspberry-pi-5" / "vcgencmd_get_throttled.txt").read_text().strip() == "throttled=0x0"
    missing = StateReader(root, nvml=False, run=replying({})).read()
    assert missing.board_throttle is None and "vcgencmd get_throttled" in missing.unreadable["board_throttle"]


def test_nvidia_clocks_temperature_and_throttle_reasons(fake_root):
    nvml = fake_nvml(clock_reasons=0x1 | 0x40)  # idle and hardware thermal slowdown
    root = fake_root("x86-laptop")
    state = StateReader(root, nvml=nvml).read()
    (gpu,) = state.gpus
    assert gpu["sm_clock_mhz"] == 2520 and gpu["memory_clock_mhz"] == 10501 and gpu["temperature_c"] == 61
    assert gpu["clock_reasons"] == ["gpu_idle", "hw_thermal"]
    assert state.slowdowns() == ["gpu0:hw_thermal"]  # idle is not a slowdown
    nvml.nvmlDeviceGetTemperature.side_effect = NVMLError_NotSupported()
    (gpu,) = StateReader(root, nvml=nvml).read().gpus
    assert gpu["temperature_c"] is None and "NVML" in gpu["unreadable"]["temperature_c"]


def test_without_pynvml_the_gpu_field_says_why():
    state = StateReader(Path("/nonexistent-root"), nvml=None).read()
    assert state.gpus == [] and "pynvml" in state.unreadable["gpus"]
    assert "cpu" in state.unreadable and "temperatures_c" in state.unreadable


def test_this_machine_gives_a_value_or_a_reason_for_every_field():
    state = read_state()
    data = state.to_dict()
    for name in ("cpu_freq_mhz", "cpu_governor", "cpu_throttle_count"):
        assert (data[name] is None) == (name in state.unreadable or "cpu" in state.unreadable), name
    assert isinstance(data["key"], str) and data["key"]


def test_state_round_trips_through_to_dict():
    state = DeviceState(cpu_governor="performance", power_mode="1", jetson_clocks=True)
    assert state.to_dict()["key"] == "mode=1;governor=performance;jetson_clocks=on"
    assert DeviceState().key() == "default"


class _Profile:
    """The two predictions the corrector asks of a profile: 10 ms per decode step."""

    kind = "measured"
    device = {"kind": "cpu", "details": {"cores": 2}}

    class _Variant:
        threads = 2
        fit_error = {"decode_held_out": {"mape_pct": 5.0}}
        energy = {"avg_power_w": 10.0}

    variants = {"m": _Variant()}

    def variant(self, name):
        return self.variants[name]

    def predict_prefill_ms(self, variant, n):
        return 1.0 * n

    def predict_decode_step_ms(self, variant, context, batch=1):
        return 10.0


def steps(ms: float, n: int = 10):
    return [StepRecord("decode", 1, 100 + i, ms) for i in range(n)]


def test_a_new_state_starts_from_the_profile_and_the_old_state_is_restored():
    corrector = LatencyCorrector(_Profile())
    corrector.enter_state("governor=performance")
    for _ in range(4):
        corrector.observe("m", 2, steps(10.0))
    calm = dict(corrector.corrections)
    assert corrector.correction("m", 2) == pytest.approx(1.0)
    assert corrector.enter_state("governor=performance;slowdown=cpu:thermal_throttle") is True
    assert corrector.corrections == {} and corrector.residuals == {}  # not averaged with the calm state
    for _ in range(4):
        corrector.observe("m", 2, steps(30.0))
    assert corrector.correction("m", 2) > 2.5
    assert corrector.enter_state("governor=performance") is True
    assert corrector.corrections == calm  # what was learned while calm comes back
    assert corrector.enter_state("governor=performance") is False
