"""Power knobs: how a watt limit reaches the hardware beyond the planner's own choices.

On CPUs the knob is the thread count, which the planner chooses per request (see
planner.py). Other devices have a device-wide setting:

- Jetson: the nvpmodel power mode (``/etc/nvpmodel.conf`` lists ``< POWER_MODEL ID=n
  NAME=15W >`` entries; ``nvpmodel -m n`` selects one; needs root). The knob picks the
  fastest mode whose rated watts fit the limit; MAXN modes have no rating and are used only
  without a limit.
- NVIDIA GPUs: the board power limit through NVML (``nvmlDeviceSetPowerManagementLimit``,
  clamped to ``nvmlDeviceGetPowerManagementLimitConstraints``; needs root).

A knob that cannot act (no permission, missing tool) raises DeviceError with the reason;
the runtime records it and carries on, because a robot must still get its answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional

from .devices.base import Runner, default_run, under
from .errors import DeviceError

NVPMODEL_CONF = "/etc/nvpmodel.conf"
POWER_MODEL = re.compile(r"^\s*<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=([^\s>]+)\s*>", re.MULTILINE)
MODE_WATTS = re.compile(r"(\d+(?:\.\d+)?)W", re.IGNORECASE)
MW_PER_W = 1000.0


@dataclass(frozen=True)
class PowerSetting:
    """One position of a knob: what it is called and the watts it is rated for (None: unrated)."""

    id: str
    label: str
    power_w: Optional[float]


class PowerKnob:
    """A device-wide power setting the runtime can move to honour a watt limit."""

    name = ""

    def settings(self) -> List[PowerSetting]:
        raise NotImplementedError

    def current(self) -> Optional[PowerSetting]:
        raise NotImplementedError

    def choose(self, power_w: Optional[float]) -> PowerSetting:
        raise NotImplementedError

    def apply(self, setting: PowerSetting) -> None:
        raise NotImplementedError

    def apply_limit(self, power_w: Optional[float]) -> PowerSetting:
        """Move the knob to the setting for ``power_w`` (None: no limit); no-op if already there."""
        setting = self.choose(power_w)
        now = self.current()
        if now is None or now.id != setting.id:
            self.apply(setting)
        return setting


def parse_nvpmodel_conf(text: str) -> List[PowerSetting]:
    """``< POWER_MODEL ID=1 NAME=MODE_15W >`` lines -> settings with watts where the name has them."""
    out = []
    for match in POWER_MODEL.finditer(text):
        mode_id, name = match.group(1), match.group(2)
        watts = MODE_WATTS.search(name)
        out.append(PowerSetting(mode_id, name, float(watts.group(1)) if watts else None))
    return out


class JetsonPowerModes(PowerKnob):
    name = "nvpmodel"

    def __init__(self, root: Path = Path("/"), run: Optional[Runner] = None):
        self.root = Path(root)
        self._run = run or default_run
        path = under(self.root, NVPMODEL_CONF)
        try:
            self._settings = parse_nvpmodel_conf(path.read_text(errors="replace"))
        except OSError as exc:
            raise DeviceError(f"cannot read the Jetson power modes: expected {path}, {exc.strerror or exc}") from None
        if not self._settings:
            raise DeviceError(f"{path}: expected '< POWER_MODEL ID=n NAME=... >' entries, found none")

    def settings(self) -> List[PowerSetting]:
        return list(self._settings)

    def current(self) -> Optional[PowerSetting]:
        from .devices.jetson import parse_nvpmodel_query

        try:
            mode = parse_nvpmodel_query(self._run(("nvpmodel", "-q")))
        except Exception:
            return None
        mode_id = mode.get("power_mode_id")
        return next((s for s in self._settings if s.id == str(mode_id)), None)

    def choose(self, power_w: Optional[float]) -> PowerSetting:
        rated = sorted((s for s in self._settings if s.power_w is not None), key=lambda s: s.power_w)
        if power_w is None:
            unrated = [s for s in self._settings if s.power_w is None]  # MAXN: no cap at all
            return unrated[0] if unrated else rated[-1]
        fitting = [s for s in rated if s.power_w <= power_w]
        if fitting:
            return fitting[-1]
        if not rated:
            raise DeviceError(f"no Jetson power mode is rated in watts ({', '.join(s.label for s in self._settings)})")
        return rated[0]  # the lowest mode; the planner reports that the limit cannot be met

    def apply(self, setting: PowerSetting) -> None:
        try:
            self._run(("nvpmodel", "-m", setting.id))
        except FileNotFoundError:
            raise DeviceError("nvpmodel not found: cannot change the Jetson power mode") from None
        except Exception as exc:
            raise DeviceError(f"nvpmodel -m {setting.id} ({setting.label}) failed (it needs root): {exc}") from None


class NvidiaPowerLimit(PowerKnob):
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
