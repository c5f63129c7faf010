"""NVIDIA GPUs through NVML (the ``pynvml`` module of the ``nvidia-ml-py`` package).

pynvml is optional and imported lazily; every NVML call goes through ``_call`` so
``NVMLError`` never leaks: "not supported" becomes None (the fact is left out), anything
else becomes ``DeviceError`` / ``SensorUnavailable``.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..errors import BackendUnavailableError, DeviceError, GenerationError, SensorUnavailable, unavailable
from .base import Device, DeviceInfo, PowerKnob, PowerReading, PowerSetting, Sensor
from .cuda import CudaRuntime

log = logging.getLogger("edgert.devices.nvidia")
log.addHandler(logging.NullHandler())

# NVML units (NVML API reference, nvml.h): power and limits in milliwatts, total energy in
# millijoules since the driver was loaded (Volta and newer), memory in bytes, clocks in MHz.
MW_PER_W = 1000.0
MJ_PER_J = 1000.0
NVML_ERROR_NOT_SUPPORTED = 3  # nvmlReturn_t NVML_ERROR_NOT_SUPPORTED
NVML_CLOCK_GRAPHICS = 0  # nvmlClockType_t
NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
CLOCKS_MHZ = {"graphics_max": NVML_CLOCK_GRAPHICS, "sm_max": NVML_CLOCK_SM, "memory_max": NVML_CLOCK_MEM}


def load_nvml(nvml: Any = None) -> Any:
    """The pynvml module, initialised; ``nvml`` lets tests pass a fake."""
    if nvml is None:
        try:
            import pynvml as nvml  # type: ignore[no-redef]
        except ImportError as exc:
            raise unavailable("NVIDIA GPU support (pynvml)", "gpu") from exc
    try:
        nvml.nvmlInit()
    except Exception as exc:
        if not _is_nvml_error(nvml, exc):
            raise
        raise DeviceError(f"NVML did not initialise (is the NVIDIA driver loaded?): {exc}") from exc
    return nvml


def _is_nvml_error(nvml: Any, exc: BaseException) -> bool:
    error_type = getattr(nvml, "NVMLError", None)
    return isinstance(error_type, type) and isinstance(exc, error_type)


def _not_supported(nvml: Any, exc: BaseException) -> bool:
    specific = getattr(nvml, "NVMLError_NotSupported", None)
    if isinstance(specific, type) and isinstance(exc, specific):
        return True
    return getattr(exc, "value", None) == NVML_ERROR_NOT_SUPPORTED


def _call(nvml: Any, fn: Callable, *args, what: str, optional: bool = True, error=DeviceError):
    """Call an NVML function; None when unsupported and ``optional``, else an edgert error."""
    try:
        return fn(*args)
    except Exception as exc:
        if not _is_nvml_error(nvml, exc):
            raise
        if optional and _not_supported(nvml, exc):
            return None
        raise error(f"NVML {what} failed: {exc}") from exc


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NvmlEnergySensor(Sensor):
    """The GPU's total-energy counter (nvmlDeviceGetTotalEnergyConsumption, mJ, Volta+)."""

    def __init__(self, nvml: Any, handle: Any, index: int):
        self.nvml, self.handle = nvml, handle
        self.name = f"nvml:total_energy:gpu{index}"
        if self._energy_mj(optional=True) is None:
            raise SensorUnavailable(f"GPU {index} has no total-energy counter (needs Volta or newer)")

    def _energy_mj(self, optional: bool = False):
        return _call(self.nvml, self.nvml.nvmlDeviceGetTotalEnergyConsumption, self.handle,
                     what="total energy", optional=optional, error=SensorUnavailable)

    def read(self) -> PowerReading:
        return self._reading(energy_j=self._energy_mj() / MJ_PER_J)


class NvmlPowerSensor(Sensor):
    """Board power draw (nvmlDeviceGetPowerUsage, mW); the energy meter integrates it."""

    def __init__(self, nvml: Any, handle: Any, index: int):
        self.nvml, self.handle = nvml, handle
        self.name = f"nvml:power_usage:gpu{index}"
        if self._power_mw(optional=True) is None:
            raise SensorUnavailable(f"GPU {index} does not report its power draw")

    def _power_mw(self, optional: bool = False):
        return _call(self.nvml, self.nvml.nvmlDeviceGetPowerUsage, self.handle,
                     what="power usage", optional=optional, error=SensorUnavailable)

    def read(self) -> PowerReading:
        return self._reading(power_w=self._power_mw() / MW_PER_W)


class NvidiaPowerLimit(PowerKnob):
    """The board power limit (nvmlDeviceSetPowerManagementLimit, clamped to the limit
    constraints; needs root, like ``nvidia-smi -pl``)."""

    name = "nvml-power-limit"

    def __init__(self, nvml: Any, handle: Any):
        self.nvml = nvml
        self.handle = handle
        try:
            low_mw, high_mw = nvml.nvmlDeviceGetPowerManagementLimitConstraints(handle)
        except Exception as exc:
            raise DeviceError(f"NVML power limit constraints unavailable: {exc}") from None
        self.min_w, self.max_w = low_mw / MW_PER_W, high_mw / MW_PER_W

    def settings(self) -> List[PowerSetting]:
        return [PowerSetting(f"{self.min_w:g}", f"{self.min_w:g} W", self.min_w),
                PowerSetting(f"{self.max_w:g}", f"{self.max_w:g} W", self.max_w)]

    def current(self) -> Optional[PowerSetting]:
        try:
            watts = self.nvml.nvmlDeviceGetPowerManagementLimit(self.handle) / MW_PER_W
        except Exception:
            return None
        return PowerSetting(f"{watts:g}", f"{watts:g} W", watts)

    def choose(self, power_w: Optional[float]) -> PowerSetting:
        watts = self.max_w if power_w is None else min(max(power_w, self.min_w), self.max_w)
        return PowerSetting(f"{watts:g}", f"{watts:g} W", watts)

    def apply(self, setting: PowerSetting) -> None:
        try:
            self.nvml.nvmlDeviceSetPowerManagementLimit(self.handle, int(setting.power_w * MW_PER_W))
        except Exception as exc:
            raise DeviceError(
                f"setting the GPU power limit to {setting.label} failed (it needs root, like nvidia-smi -pl): {exc}"
            ) from None


class NvidiaGpu(Device):
    """One NVIDIA GPU seen through NVML."""

    kind = "nvidia-gpu"
    default_tdp_w = 170.0  # RTX 3060 board power; used only when NVML reports no limit

    def __init__(self, nvml: Any, index: int):
        super().__init__()
        self.nvml = nvml
        self.index = index
        self.handle = _call(nvml, nvml.nvmlDeviceGetHandleByIndex, index, what=f"handle of GPU {index}", optional=False)

    def _get(self, fn_name: str, *args, what: str):
        return _call(self.nvml, getattr(self.nvml, fn_name), self.handle, *args, what=what)

    def _power_limit_w(self) -> Optional[float]:
        limit_mw = self._get("nvmlDeviceGetEnforcedPowerLimit", what="enforced power limit")
        if limit_mw is None:
            limit_mw = self._get("nvmlDeviceGetPowerManagementLimit", what="power management limit")
        return limit_mw / MW_PER_W if limit_mw else None

    def info(self) -> DeviceInfo:
        name = self._get("nvmlDeviceGetName", what="name")
        details: Dict[str, object] = {"index": self.index}
        capability = self._get("nvmlDeviceGetCudaComputeCapability", what="compute capability")
        if capability:
            details["compute_capability"] = f"{capability[0]}.{capability[1]}"
        memory = self._get("nvmlDeviceGetMemoryInfo", what="memory info")
        if memory is not None:
            details["memory_bytes"] = int(memory.total)
        limit = self._power_limit_w()
        if limit:
            details["power_limit_w"] = limit
        clocks = {}
        for key, clock_type in CLOCKS_MHZ.items():
            mhz = self._get("nvmlDeviceGetMaxClockInfo", clock_type, what=f"max clock {key}")
            if mhz:
                clocks[key] = int(mhz)
        if clocks:
            details["clocks_mhz"] = clocks
        driver = _call(self.nvml, self.nvml.nvmlSystemGetDriverVersion, what="driver version")
        if driver:
            details["driver_version"] = _text(driver)
        return DeviceInfo(self.kind, _text(name) if name else f"NVIDIA GPU {self.index}", "NVIDIA", details)

    def _known_tdp_w(self) -> Optional[float]:
        return self._power_limit_w()

    def power_knob(self) -> NvidiaPowerLimit:
        """The board power limit (DeviceError when NVML reports no limit constraints)."""
        return NvidiaPowerLimit(self.nvml, self.handle)

    def _measured_sensors(self) -> List[Sensor]:
        for sensor_type in (NvmlEnergySensor, NvmlPowerSensor):
            try:
                return [sensor_type(self.nvml, self.handle, self.index)]
            except SensorUnavailable as exc:
                self.sensor_problems.append(f"nvml: {exc}")
        return []


def nvml_capability(nvml: Any = None, index: int = 0) -> Tuple[str, str]:
    """(compute capability 'M.m', name) of one GPU through NVML; DeviceError when NVML cannot say."""
    module = load_nvml(nvml)
    handle = _call(module, module.nvmlDeviceGetHandleByIndex, index, what=f"handle of GPU {index}", optional=False)
    major, minor = _call(module, module.nvmlDeviceGetCudaComputeCapability, handle,
                         what=f"compute capability of GPU {index}", optional=False)
    name = _call(module, module.nvmlDeviceGetName, handle, what=f"name of GPU {index}", optional=False)
    return f"{int(major)}.{int(minor)}", _text(name)


def gpu_capability(nvml: Any = None, cuda: Any = None) -> Tuple[Optional[str], Optional[str]]:
    """(compute capability 'M.m', GPU name) of GPU 0: NVML first, then the CUDA runtime
    (Jetson boards before JetPack 7 have no NVML); (None, None) when neither answers.
    ``nvml`` and ``cuda`` (a ``CudaRuntime``) replace the real bindings in tests."""
    try:
        return nvml_capability(nvml)
    except (BackendUnavailableError, DeviceError) as exc:
        log.debug("NVML: %s", exc)
    try:
        runtime = cuda if cuda is not None else CudaRuntime.load()
        major, minor, name = runtime.device_capability(0)
        return f"{major}.{minor}", name
    except (BackendUnavailableError, GenerationError) as exc:
        log.debug("CUDA runtime: %s", exc)
    return None, None


def nvidia_gpus(nvml: Any = None) -> List[NvidiaGpu]:
    """Every GPU NVML sees; raise BackendUnavailableError / DeviceError when NVML cannot start."""
    nvml = load_nvml(nvml)
    count = _call(nvml, nvml.nvmlDeviceGetCount, what="device count", optional=False)
    return [NvidiaGpu(nvml, i) for i in range(int(count))]
