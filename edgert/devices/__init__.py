"""Devices and their power/energy sensors: one implementation per vendor.

``detect_devices()`` lists what this machine has: the CPU always, NVIDIA GPUs when NVML
loads, a Jetson or Raspberry Pi board when the device tree says so. Each device's
``sensors()`` lists its power sensors best first and always ends with the TDP estimate;
``power_knob()`` gives the device-wide power setting of the first device that has one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

from ..errors import EdgertError
from .base import (ESTIMATED, MEASURED, Device, DeviceInfo, EnergyMeter, EnergyResult, EstimatedSensor, PowerKnob,
                   PowerReading, PowerSetting, Runner, Sensor, integrate)
from .cpu import CpuDevice, RaplSensor, RaplZone, rapl_sensors
from .jetson import JetsonDevice, JetsonPowerModes, RailSensor, discover_rails, is_jetson
from .nvidia import NvidiaGpu, NvidiaPowerLimit, NvmlEnergySensor, NvmlPowerSensor, nvidia_gpus
from .raspberrypi import PmicSensor, RaspberryPi, is_raspberry_pi

__all__ = [
    "MEASURED", "ESTIMATED", "Device", "DeviceInfo", "Sensor", "PowerReading", "EnergyMeter", "EnergyResult",
    "EstimatedSensor", "integrate", "CpuDevice", "RaplSensor", "RaplZone", "rapl_sensors", "NvidiaGpu",
    "NvmlEnergySensor", "NvmlPowerSensor", "nvidia_gpus", "JetsonDevice", "RailSensor", "discover_rails",
    "RaspberryPi", "PmicSensor", "detect_devices", "PowerKnob", "PowerSetting", "JetsonPowerModes", "NvidiaPowerLimit",
    "power_knob",
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


def power_knob(root: Path = Path("/"), nvml: Any = None, run: Optional[Runner] = None,
               notes: Optional[List[str]] = None) -> Optional[PowerKnob]:
    """The power knob of the first detected device that has a usable one (NVIDIA GPUs before
    the board, as ``detect_devices`` lists them); None when none has. Why a device's knob
    was skipped is appended to ``notes`` if given."""
    notes = notes if notes is not None else []
    for device in detect_devices(root, nvml=nvml, run=run, notes=notes):
        try:
            knob = device.power_knob()
        except EdgertError as exc:
            notes.append(f"{device.kind}: {exc}")
            continue
        if knob is not None:
            return knob
    return None
