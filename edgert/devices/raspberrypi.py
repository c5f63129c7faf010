"""Raspberry Pi boards: model from the device tree; Pi 5 PMIC rails via ``vcgencmd pmic_read_adc``.

The Pi 5 PMIC reports the current of 12 rails and the voltage of 14; the
sensor sums V × I over the rails that have both. The sum covers the SoC-side rails only
(USB, fan and HATs are fed from 5 V before the PMIC), so it reads below wall power.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..errors import SensorUnavailable
from .base import Device, DeviceInfo, Opener, PowerReading, Runner, Sensor, default_run, try_read, under
from .cpu import CpuDevice, MEMINFO, _meminfo_total_bytes

# Sources: Raspberry Pi documentation, "vcgencmd" (pmic_read_adc, measure_clock, get_throttled);
# output format as captured on a Pi 5 in Zeus tests/device/machine/test_rpi.py (see
# tests/fixtures/sysfs/raspberry-pi-5/SOURCE.md).
DEVICE_TREE_MODEL = "/proc/device-tree/model"
MODEL_PREFIX = "Raspberry Pi"
PMIC_READ_ADC = ("vcgencmd", "pmic_read_adc")
# "   VDD_CORE_A current(7)=2.43170000A" / "   VDD_CORE_V volt(15)=0.86000000V"
PMIC_LINE = re.compile(r"^\s*(?P<rail>\S+)_(?P<kind>[AV])\s+(?:current|volt)\(\d+\)=(?P<value>[-+0-9.eE]+)[AV]\s*$")


def parse_pmic_adc(text: str) -> Tuple[Dict[str, float], Dict[str, float]]:
    """``vcgencmd pmic_read_adc`` output -> ({rail: amps}, {rail: volts})."""
    amps: Dict[str, float] = {}
    volts: Dict[str, float] = {}
    for line in text.splitlines():
        match = PMIC_LINE.match(line)
        if match:
            (amps if match["kind"] == "A" else volts)[match["rail"]] = float(match["value"])
    return amps, volts


class PmicSensor(Sensor):
    """Pi 5 PMIC: Σ V·I over rails with both a current and a voltage reading."""

    name = "pmic:sum(V*I)"

    def __init__(self, run: Runner):
        self._run = run
        self.rails = sorted(self._rail_powers())

    def _rail_powers(self) -> Dict[str, float]:
        try:
            text = self._run(PMIC_READ_ADC)
        except Exception as exc:  # missing vcgencmd, no access to /dev/vcio, firmware without it
            raise SensorUnavailable(f"`{' '.join(PMIC_READ_ADC)}` failed: {exc}") from exc
        amps, volts = parse_pmic_adc(text)
        powers = {rail: amps[rail] * volts[rail] for rail in amps if rail in volts}
        if not powers:
            raise SensorUnavailable(
                f"expected rail lines like 'VDD_CORE_A current(7)=...A' from `{' '.join(PMIC_READ_ADC)}`, "
                f"found {text.strip()[:80]!r}"
            )
        return powers

    def read(self) -> PowerReading:
        return self._reading(power_w=sum(self._rail_powers().values()))


def is_raspberry_pi(root: Path = Path("/"), opener: Opener = open) -> bool:
    return (try_read(under(root, DEVICE_TREE_MODEL), opener) or "").startswith(MODEL_PREFIX)


class RaspberryPi(Device):
    """A Raspberry Pi board (the SoC and its memory as one device)."""

    kind = "raspberry-pi"
    default_tdp_w = 12.0  # a Pi 5 under full CPU load; the profiler passes the prior's figure instead

    def __init__(self, root: Path = Path("/"), run: Optional[Runner] = None, opener: Opener = open):
        super().__init__()
        self.root = Path(root)
        self._run = run or default_run
        self._opener = opener

    def model(self) -> str:
        return try_read(under(self.root, DEVICE_TREE_MODEL), self._opener) or "Raspberry Pi"

    def info(self) -> DeviceInfo:
        cpu = CpuDevice(self.root, self._opener).info()
        details: Dict[str, object] = {
            key: cpu.details[key] for key in ("cores", "threads", "simd", "governor", "max_freq_mhz") if key in cpu.details
        }
        details["cpu"] = cpu.name
        memory = _meminfo_total_bytes(try_read(under(self.root, MEMINFO), self._opener) or "")
        if memory:
            details["memory_bytes"] = memory
        return DeviceInfo(self.kind, self.model(), "Raspberry Pi", details)

    def _measured_sensors(self) -> List[Sensor]:
        try:
            return [PmicSensor(self._run)]
        except SensorUnavailable as exc:
            self.sensor_problems.append(f"pmic: {exc}")
            return []
