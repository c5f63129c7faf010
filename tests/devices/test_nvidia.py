"""NVIDIA GPUs through an autospec'd fake of pynvml (nvidia-ml-py is not installed here)."""

from unittest import mock

import pytest
from device_fakes import (NVML_ERROR_DRIVER_NOT_LOADED, NVML_ERROR_NOT_SUPPORTED, NVML_ERROR_UNINITIALIZED, NVMLError,
                          NVMLError_NotSupported, fake_nvml)

from edgert.devices import NvidiaGpu, NvmlEnergySensor, NvmlPowerSensor, detect_devices, nvidia_gpus
from edgert.errors import BackendUnavailableError, DeviceError, SensorUnavailable


def test_info_units_converted():
    nvml = fake_nvml()
    (gpu,) = nvidia_gpus(nvml)
    nvml.nvmlInit.assert_called_once_with()
    info = gpu.info()
    assert info.kind == "nvidia-gpu" and info.vendor == "NVIDIA" and info.name == "NVIDIA GeForce RTX 4090"
    assert info.details["compute_capability"] == "8.9"
    assert info.details["memory_bytes"] == 25757220864
    assert info.details["power_limit_w"] == 450.0
    assert info.details["clocks_mhz"] == {"graphics_max": 3120, "sm_max": 3120, "memory_max": 10501}
    assert info.details["driver_version"] == "560.35.03"
    nvml.nvmlDeviceGetMemoryInfo.assert_called_with("handle0")


def test_energy_counter_preferred_and_in_joules():
    nvml = fake_nvml(energy_mj=[1_000_000, 1_000_000, 1_012_500])
    sensors = NvidiaGpu(nvml, 0).sensors()
    assert isinstance(sensors[0], NvmlEnergySensor) and sensors[0].name == "nvml:total_energy:gpu0"
    first, second = sensors[0].read(), sensors[0].read()
    assert first.energy_j == 1000.0 and second.energy_j - first.energy_j == pytest.approx(12.5)
    assert second.provenance == "measured"


def test_power_usage_when_counter_not_supported():
    gpu = NvidiaGpu(fake_nvml(energy_mj=None, power_mw=87_654), 0)
    sensors = gpu.sensors()
    assert isinstance(sensors[0], NvmlPowerSensor)
    assert sensors[0].read().power_w == pytest.approx(87.654)
    assert "no total-energy counter" in gpu.sensor_problems[0]


def test_neither_supported_gives_estimate_from_power_limit():
    gpu = NvidiaGpu(fake_nvml(energy_mj=None, power_mw=None), 0)
    sensors = gpu.sensors()
    assert len(sensors) == 1 and sensors[0].provenance == "estimated" and sensors[0].tdp_w == 450.0


def test_missing_limit_falls_back_to_management_limit_then_nothing():
    nvml = fake_nvml()
    nvml.nvmlDeviceGetEnforcedPowerLimit.side_effect = NVMLError_NotSupported()
    nvml.nvmlDeviceGetPowerManagementLimit.return_value = 115_000
    assert NvidiaGpu(nvml, 0).info().details["power_limit_w"] == 115.0
    nvml.nvmlDeviceGetPowerManagementLimit.side_effect = NVMLError_NotSupported()
    assert "power_limit_w" not in NvidiaGpu(nvml, 0).info().details


def test_other_nvml_errors_become_edgert_errors():
    nvml = fake_nvml()
    nvml.nvmlDeviceGetTotalEnergyConsumption.side_effect = [1000, NVMLError(NVML_ERROR_UNINITIALIZED)]
    sensor = NvidiaGpu(nvml, 0).sensors()[0]
    with pytest.raises(SensorUnavailable, match="NVML total energy failed"):
        sensor.read()


def test_init_failure_and_missing_binding():
    nvml = fake_nvml()
    nvml.nvmlInit.side_effect = NVMLError(NVML_ERROR_DRIVER_NOT_LOADED)
    with pytest.raises(DeviceError, match="NVML did not initialise"):
        nvidia_gpus(nvml)
    with mock.patch.dict("sys.modules", {"pynvml": None}):
        with pytest.raises(BackendUnavailableError, match=r"unavailable: install edgert\[gpu\]"):
            nvidia_gpus()


def test_fake_rejects_wrong_signatures():
    nvml = fake_nvml()
    with pytest.raises(TypeError):
        nvml.nvmlDeviceGetPowerUsage()


def test_detect_devices_adds_gpus_and_notes_failures(tmp_path):
    devices = detect_devices(tmp_path, nvml=fake_nvml())
    assert [d.kind for d in devices] == ["cpu", "nvidia-gpu"]
    broken = fake_nvml()
    broken.nvmlInit.side_effect = NVMLError(NVML_ERROR_DRIVER_NOT_LOADED)
    notes = []
    assert [d.kind for d in detect_devices(tmp_path, nvml=broken, notes=notes)] == ["cpu"]
    assert notes[0].startswith("nvidia: NVML did not initialise")
