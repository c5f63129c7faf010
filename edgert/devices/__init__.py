"""Devices and their power/energy sensors: one implementation per vendor.

``detect_devices()`` lists what this machine has: the CPU always, NVIDIA GPUs when NVML
loads, a Jetson or Raspberry Pi board when the device tree says so. Each device's
``sensors()`` lists its power sensors best first and always ends with the TDP estimate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

from ..errors import EdgertError
from .base import (ESTIMATED, MEASURED, Device, DeviceInfo, EnergyMeter, EnergyResult, EstimatedSensor, PowerReading,
                   Runner, Sensor, integrate)
from .cpu import CpuDevice, RaplSensor, RaplZone, rapl_sensors
from .jetson import JetsonDevice, RailSensor, discover_rails, is_jetson
from .nvidia import NvidiaGpu, NvmlEnergySensor, NvmlPowerSensor, nvidia_gpus
from .raspberrypi import PmicSensor, RaspberryPi, is_raspberry_pi

__all__ = [
    "MEASURED", "ESTIMATED", "Device", "DeviceInfo", "Sensor", "PowerReading", "EnergyMeter", "EnergyResult",
    "EstimatedSensor", "integrate", "CpuDevice", "RaplSensor", "RaplZone", "rapl_sensors", "NvidiaGpu",
    "NvmlEnergySensor", "NvmlPowerSensor", "nvidia_gpus", "JetsonDevice", "RailSensor", "discover_rails",
    "RaspberryPi", "PmicSensor", "detect_devices",
]


def detect_devices(root: Path = Path("/"), nvml: Any = None, run: Optional[Runner] = None,
                   notes: Optional[List[str]] = None) -> List[Device]:
    """The CPU, then NVIDIA GPUs (through NVML), then a Jetson or Raspberry Pi board, if any.

    ``nvml`` replaces the pynvml module and ``run`` replaces subprocess (vcgencmd,
    nvpmodel) in tests. Why a vendor was skipped is appended to ``notes`` if given.
    """
    root = Path(root)
    notes = notes if notes is not None else []
    devices: List[Device] = [CpuDevice(root)]
    try:
        devices += nvidia_gpus(nvml)
    except EdgertError as exc:
        notes.append(f"nvidia: {exc}")
    if is_jetson(root):
        devices.append(JetsonDevice(root, run=run))
    elif is_raspberry_pi(root):
        devices.append(RaspberryPi(root, run=run))
    return devices
