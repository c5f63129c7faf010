"""Helpers shared by the device tests: the fixture roots, a fake command runner, a fake pynvml."""

import types
from pathlib import Path
from unittest import mock

SYSFS = Path(__file__).parent.parent / "fixtures" / "sysfs"


def replying(outputs):
    """A fake ``run``: maps an argv tuple to its stdout, or raises FileNotFoundError."""

    def run(argv):
        key = tuple(argv)
        if key not in outputs:
            raise FileNotFoundError(f"no such command: {argv[0]}")
        return outputs[key]

    return run


NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_DRIVER_NOT_LOADED = 9


class NVMLError(Exception):
    """Mirrors pynvml.NVMLError: carries the nvmlReturn_t code in ``value``."""

    def __init__(self, value):
        super().__init__(value)
        self.value = value


class NVMLError_NotSupported(NVMLError):
    def __init__(self):
        super().__init__(NVML_ERROR_NOT_SUPPORTED)


def _spec_module():
    """The part of pynvml edgert calls, with nvidia-ml-py's names and signatures."""
    spec = types.ModuleType("pynvml")

    def nvmlInit(): ...
    def nvmlShutdown(): ...
    def nvmlSystemGetDriverVersion(): ...
    def nvmlDeviceGetCount(): ...
    def nvmlDeviceGetHandleByIndex(index): ...
    def nvmlDeviceGetName(handle): ...
    def nvmlDeviceGetCudaComputeCapability(handle): ...
    def nvmlDeviceGetMemoryInfo(handle, version=None): ...
    def nvmlDeviceGetPowerManagementLimit(handle): ...
    def nvmlDeviceGetEnforcedPowerLimit(handle): ...
    def nvmlDeviceGetMaxClockInfo(handle, type): ...
    def nvmlDeviceGetPowerUsage(handle): ...
    def nvmlDeviceGetTotalEnergyConsumption(handle): ...
    def nvmlDeviceGetClockInfo(handle, type): ...
    def nvmlDeviceGetTemperature(handle, sensor): ...
    def nvmlDeviceGetCurrentClocksEventReasons(handle): ...
    def nvmlDeviceGetPowerManagementLimitConstraints(handle): ...

    for fn in list(locals().values()):
        if callable(fn):
            setattr(spec, fn.__name__, fn)
    return spec


def fake_nvml(energy_mj=(1_000_000,), power_mw=250_000, clock_reasons=0x0):
    """A pynvml with one RTX 4090; clock_reasons: the clock event (throttle) reasons bitmask."""
    nvml = mock.create_autospec(_spec_module())
    nvml.NVMLError = NVMLError
    nvml.NVMLError_NotSupported = NVMLError_NotSupported
    nvml.nvmlDeviceGetCount.return_value = 1
    nvml.nvmlDeviceGetHandleByIndex.side_effect = lambda i: f"handle{i}"
    nvml.nvmlDeviceGetName.return_value = "NVIDIA GeForce RTX 4090"
    nvml.nvmlDeviceGetCudaComputeCapability.return_value = (8, 9)
    nvml.nvmlDeviceGetMemoryInfo.return_value = types.SimpleNamespace(total=25757220864, free=1, used=2)
    nvml.nvmlDeviceGetEnforcedPowerLimit.return_value = 450_000
    nvml.nvmlDeviceGetPowerManagementLimit.return_value = 450_000
    nvml.nvmlDeviceGetMaxClockInfo.side_effect = lambda h, t: {0: 3120, 1: 3120, 2: 10501}[t]
    nvml.nvmlSystemGetDriverVersion.return_value = b"560.35.03"
    nvml.nvmlDeviceGetClockInfo.side_effect = lambda h, t: {0: 2520, 1: 2520, 2: 10501}[t]
    nvml.nvmlDeviceGetTemperature.return_value = 61
    nvml.nvmlDeviceGetCurrentClocksEventReasons.return_value = clock_reasons
    nvml.nvmlDeviceGetPowerManagementLimitConstraints.return_value = (150_000, 450_000)
    if energy_mj is None:
        nvml.nvmlDeviceGetTotalEnergyConsumption.side_effect = NVMLError_NotSupported()
    else:
        nvml.nvmlDeviceGetTotalEnergyConsumption.side_effect = list(energy_mj)
    if power_mw is None:
        nvml.nvmlDeviceGetPowerUsage.side_effect = NVMLError(NVML_ERROR_NOT_SUPPORTED)
    else:
        nvml.nvmlDeviceGetPowerUsage.return_value = power_mw
    return nvml
