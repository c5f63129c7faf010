"""NVIDIA Jetson boards: model, L4T/JetPack release, nvpmodel power modes, clocks; INA3221/INA238 rails.

The on-module power monitors appear in two layouts:

- L4T R32 and older (JetPack 4, ``ina3221x`` IIO driver): ``rail_name_N`` and
  ``in_powerN_input`` (mW), ``in_voltageN_input`` (mV), ``in_currentN_input`` (mA).
- L4T R34+ (JetPack 5/6, mainline ``ina3221`` hwmon driver; ``ina238`` on newer boards):
  ``inN_label``, ``inN_input`` (mV), ``currN_input`` (mA), and for INA238 ``powerN_input`` (µW).

The total is the module input rail (``VDD_IN``; ``POM_5V_IN`` on Nano/TX, JetPack 4);
boards without one (AGX Xavier, AGX Orin) get the sum of their rails.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from ..errors import DeviceError, SensorUnavailable
from .base import (Device, DeviceInfo, Opener, PowerKnob, PowerReading, PowerSetting, Runner, Sensor, default_run,
                   read_number, try_read, under)
from .cpu import CpuDevice, _meminfo_total_bytes, MEMINFO

# Sources: Linux Documentation/hwmon/ina3221.rst and ina238.rst (file names and units);
# jetson-stats jtop/core/power.py (both layouts, total-rail names, skipping "NC" and in7);
# NVIDIA Jetson Linux Developer Guide, "Platform Power and Performance" (power monitor
# paths, nvpmodel, /etc/nv_tegra_release).
DEVICE_TREE_MODEL = "/proc/device-tree/model"
DEVICE_TREE_COMPATIBLE = "/proc/device-tree/compatible"
TEGRA_RELEASE = "/etc/nv_tegra_release"
NVPMODEL_STATUS = "/var/lib/nvpmodel/status"  # "pmode:0002"
NVPMODEL_QUERY = ("nvpmodel", "-q")  # "NV Power Mode: 15W\n0\n"
NVPMODEL_SET = ("nvpmodel", "-m")  # + the mode id; needs root
# /etc/nvpmodel.conf lists the modes as "< POWER_MODEL ID=n NAME=MODE_15W >" blocks
NVPMODEL_CONF = "/etc/nvpmodel.conf"
POWER_MODEL = re.compile(r"^\s*<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=([^\s>]+)\s*>", re.MULTILINE)
MODE_WATTS = re.compile(r"(\d+(?:\.\d+)?)W", re.IGNORECASE)
HWMON_GLOBS = ("/sys/class/hwmon/hwmon*", "/sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*")
HWMON_CHIPS = ("ina3221", "ina238")
IIO_GLOB = "/sys/bus/i2c/drivers/ina3221x/*/iio:device*"
DEVFREQ = "/sys/class/devfreq"
GPU_DEVFREQ = re.compile(r"\.(ga10b|gv11b|gp10b|gpu)$|^gpu-gpc")  # Orin, Xavier, TX2, Nano/TX1; Thor
EMC_RATE_HZ = ("/sys/kernel/debug/bpmp/debug/clk/emc/rate", "/sys/kernel/debug/clk/emc/clk_rate")

# L4T release -> JetPack, from NVIDIA's JetPack archive as tabulated in dusty-nv/jetson-containers
# (jetson_containers/l4t_version.py, NVIDIA_JETPACK). Unknown releases are shown as "L4T x.y.z".
JETPACK_BY_L4T: Dict[str, str] = {
    "38.3.0": "7.1", "38.2.2": "7.0", "38.2.0": "7.0", "38.1.0": "7.0 EA",
    "36.4.7": "6.2.1", "36.4.4": "6.2.1", "36.4.3": "6.2", "36.4.2": "6.1.1", "36.4.0": "6.1",
    "36.3.0": "6.0", "36.2.0": "6.0 DP",
    "35.6.2": "5.1.5", "35.6.1": "5.1.5", "35.6.0": "5.1.4", "35.5.0": "5.1.3", "35.4.1": "5.1.2",
    "35.3.1": "5.1.1", "35.2.1": "5.1", "35.1.0": "5.0.2",
    "32.7.6": "4.6.6", "32.7.5": "4.6.5", "32.7.4": "4.6.4", "32.7.3": "4.6.3", "32.7.2": "4.6.2",
    "32.7.1": "4.6.1", "32.6.1": "4.6",
}

# Units per layout: name pattern, file templates and the factor to watts.
LABEL_LAYOUT = {"label": "in{n}_label", "volt_mv": "in{n}_input", "curr_ma": "curr{n}_input", "power_uw": "power{n}_input"}
IIO_LAYOUT = {"label": "rail_name_{n}", "power_mw": "in_power{n}_input", "volt_mv": "in_voltage{n}_input",
              "curr_ma": "in_current{n}_input"}
UW_PER_W = 1e6
MW_PER_W = 1e3
INA3221_RAIL_CHANNELS = (1, 2, 3)  # in4-6 are shunt voltages, in7/curr4 sums: not rails
TOTAL_RAILS = ("VDD_IN", "POM_5V_IN")
SKIP_LABEL = re.compile(r"^NC$|\bNC\b|sum of shunt", re.I)


@dataclass
class Rail:
    """One monitored supply rail and how to turn its files into watts."""

    name: str
    chip: str
    read_w: Callable[[], float]


class RailSensor(Sensor):
    """Instantaneous power of one rail (or the sum of several), in watts."""

    def __init__(self, rails: Sequence[Rail], name: Optional[str] = None):
        if not rails:
            raise SensorUnavailable("a rail sensor needs at least one rail")
        self.rails = list(rails)
        self.name = name or f"{rails[0].chip}:{rails[0].name}"

    def read(self) -> PowerReading:
        return self._reading(power_w=sum(rail.read_w() for rail in self.rails))


def _product_w(volt: Path, curr: Path, opener: Opener) -> Callable[[], float]:
    return lambda: read_number(volt, opener) * read_number(curr, opener) / (MW_PER_W * MW_PER_W)


def _scaled_w(path: Path, per_w: float, opener: Opener) -> Callable[[], float]:
    return lambda: read_number(path, opener) / per_w


def _label_rails(directory: Path, chip: str, opener: Opener) -> List[Rail]:
    """Rails of one hwmon ina3221/ina238 directory (the L4T R34+ layout)."""
    rails = []
    channels = sorted({int(m.group(1)) for p in directory.iterdir()
                       for m in [re.match(r"(?:in|curr|power)(\d+)_input$", p.name)] if m})
    for n in channels:
        files = {key: directory / template.format(n=n) for key, template in LABEL_LAYOUT.items()}
        label = try_read(files["label"], opener) or try_read(directory / "label", opener)
        if chip == "ina3221" and n not in INA3221_RAIL_CHANNELS:
            continue
        if label and SKIP_LABEL.search(label):
            continue
        name = label or f"{directory.name}:ch{n}"
        if files["power_uw"].exists():
            rails.append(Rail(name, chip, _scaled_w(files["power_uw"], UW_PER_W, opener)))
        elif files["volt_mv"].exists() and files["curr_ma"].exists():
            rails.append(Rail(name, chip, _product_w(files["volt_mv"], files["curr_ma"], opener)))
    return rails


def _iio_rails(directory: Path, opener: Opener) -> List[Rail]:
    """Rails of one ina3221x IIO device (the L4T R32 layout)."""
    rails = []
    for label_path in sorted(directory.glob("rail_name_*")):
        n = label_path.name.rsplit("_", 1)[-1]
        files = {key: directory / template.format(n=n) for key, template in IIO_LAYOUT.items()}
        label = try_read(label_path, opener)
        if not label or SKIP_LABEL.search(label):
            continue
        if files["power_mw"].exists():
            rails.append(Rail(label, "ina3221", _scaled_w(files["power_mw"], MW_PER_W, opener)))
        elif files["volt_mv"].exists() and files["curr_ma"].exists():
            rails.append(Rail(label, "ina3221", _product_w(files["volt_mv"], files["curr_ma"], opener)))
    return rails


def discover_rails(root: Path = Path("/"), opener: Opener = open) -> List[Rail]:
    """Every INA3221/INA238 rail under ``root``, newer hwmon layout first, deduplicated."""
    rails: List[Rail] = []
    seen = set()
    for pattern in HWMON_GLOBS:
        for directory in sorted(Path(root).glob(pattern.lstrip("/"))):
            key = directory.resolve()
            chip = try_read(directory / "name", opener)
            if key in seen or chip not in HWMON_CHIPS:
                continue
            seen.add(key)
            rails += _label_rails(directory, chip, opener)
    for directory in sorted(Path(root).glob(IIO_GLOB.lstrip("/"))):
        rails += _iio_rails(directory, opener)
    return rails


def rail_sensors(rails: Sequence[Rail]) -> List[Sensor]:
    """Total first (``VDD_IN`` or equivalent, else the sum of all rails), then CPU/GPU rails, then the rest."""
    if not rails:
        return []
    total = [r for r in rails if r.name.upper() in TOTAL_RAILS]
    sensors: List[Sensor] = [RailSensor(total[:1])] if total else [
        RailSensor(rails, name=f"{rails[0].chip}:sum({'+'.join(r.name for r in rails)})")]
    rest = [r for r in rails if r not in total[:1]]
    rest.sort(key=lambda r: (not re.search(r"CPU|GPU", r.name, re.I), r.name))
    return sensors + [RailSensor([r]) for r in rest]


def parse_tegra_release(text: str) -> Optional[str]:
    """'# R36 (release), REVISION: 4.3, ...' -> '36.4.3'."""
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def read_l4t_release(root: Path = Path("/")) -> Optional[str]:
    """The L4T release from ``<root>/etc/nv_tegra_release`` ('36.4.3'), None off Jetson."""
    try:
        return parse_tegra_release(under(root, TEGRA_RELEASE).read_text(errors="replace"))
    except OSError:
        return None


def jetpack_for_l4t(l4t: Optional[str]) -> Optional[str]:
    """The JetPack release of an L4T release ('36.4.3' -> '6.2'), None when unknown."""
    return JETPACK_BY_L4T.get(l4t) if l4t else None


def parse_nvpmodel_query(text: str) -> Dict[str, object]:
    """``nvpmodel -q`` output -> {"power_mode": "15W", "power_mode_id": 0}."""
    out: Dict[str, object] = {}
    lines = [line.strip() for line in text.splitlines()]
    for i, line in enumerate(lines):
        if line.lower().startswith("nv power mode:"):
            out["power_mode"] = line.split(":", 1)[1].strip()
            following = [x for x in lines[i + 1:] if x]
            if following and following[0].isdigit():
                out["power_mode_id"] = int(following[0])
            break
    return out


def parse_nvpmodel_conf(text: str) -> List[PowerSetting]:
    """``< POWER_MODEL ID=1 NAME=MODE_15W >`` lines -> settings with watts where the name has them."""
    out = []
    for match in POWER_MODEL.finditer(text):
        mode_id, name = match.group(1), match.group(2)
        watts = MODE_WATTS.search(name)
        out.append(PowerSetting(mode_id, name, float(watts.group(1)) if watts else None))
    return out


class JetsonPowerModes(PowerKnob):
    """The nvpmodel power mode: the fastest mode whose rated watts fit the limit; MAXN modes
    have no rating and are used only without a limit."""

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
        try:
            mode = parse_nvpmodel_query(self._run(NVPMODEL_QUERY))
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
            self._run(NVPMODEL_SET + (setting.id,))
        except FileNotFoundError:
            raise DeviceError("nvpmodel not found: cannot change the Jetson power mode") from None
        except Exception as exc:
            raise DeviceError(f"nvpmodel -m {setting.id} ({setting.label}) failed (it needs root): {exc}") from None


def is_jetson(root: Path = Path("/"), opener: Opener = open) -> bool:
    model = try_read(under(root, DEVICE_TREE_MODEL), opener) or ""
    compatible = try_read(under(root, DEVICE_TREE_COMPATIBLE), opener) or ""
    return ("jetson" in model.lower() or "nvidia,tegra" in compatible.lower()
            or under(root, TEGRA_RELEASE).is_file())


class JetsonDevice(Device):
    """A Jetson module: the SoC as one device, powered through its INA rails."""

    kind = "jetson"
    default_tdp_w = 15.0  # Orin Nano 8GB default mode; power modes named "NNW" override it

    def __init__(self, root: Path = Path("/"), run: Optional[Runner] = None, opener: Opener = open):
        super().__init__()
        self.root = Path(root)
        self._run = run or default_run
        self._opener = opener

    def _read(self, path: str) -> Optional[str]:
        return try_read(under(self.root, path), self._opener)

    def power_mode(self) -> Dict[str, object]:
        try:
            mode = parse_nvpmodel_query(self._run(NVPMODEL_QUERY))
        except Exception:  # missing tool, no permission, timeout: fall back to the status file
            mode = {}
        if "power_mode_id" not in mode:
            status = self._read(NVPMODEL_STATUS) or ""
            match = re.search(r"pmode:(\d+)", status)
            if match:
                mode["power_mode_id"] = int(match.group(1))
        return mode

    def clocks_mhz(self) -> Dict[str, float]:
        clocks: Dict[str, float] = {}
        base = under(self.root, DEVFREQ)
        for node in sorted(base.iterdir()) if base.is_dir() else []:
            if GPU_DEVFREQ.search(node.name):
                for key, file in (("gpu", "cur_freq"), ("gpu_max", "max_freq")):
                    hz = try_read(node / file, self._opener)
                    if hz and hz.isdigit():
                        clocks[key] = int(hz) / 1e6
                break
        for path in EMC_RATE_HZ:
            hz = self._read(path)
            if hz and hz.isdigit():
                clocks["emc"] = int(hz) / 1e6
                break
        cpu_max = CpuDevice(self.root, self._opener)._cpufreq()[1]
        if cpu_max:
            clocks["cpu_max"] = cpu_max
        return clocks

    def info(self) -> DeviceInfo:
        model = self._read(DEVICE_TREE_MODEL)
        release_line = self._read(TEGRA_RELEASE)
        details: Dict[str, object] = {}
        release = parse_tegra_release(release_line or "")
        if release:
            details["l4t_release"] = release
        details.update(self.power_mode())
        tdp = self._known_tdp_w(details)
        if tdp:
            details["tdp_w"] = tdp
        clocks = self.clocks_mhz()
        if clocks:
            details["clocks_mhz"] = clocks
        memory = _meminfo_total_bytes(self._read(MEMINFO) or "")
        if memory:
            details["memory_bytes"] = memory
        name = model or (f"NVIDIA Jetson (L4T {release})" if release else "NVIDIA Jetson")
        return DeviceInfo(self.kind, name, "NVIDIA", details)

    def power_knob(self) -> JetsonPowerModes:
        """The nvpmodel modes of this board (DeviceError when nvpmodel.conf is unreadable)."""
        return JetsonPowerModes(self.root, run=self._run)

    def _known_tdp_w(self, details: Optional[Dict[str, object]] = None) -> Optional[float]:
        mode = (details if details is not None else self.power_mode()).get("power_mode")
        match = re.match(r"^(?:MODE_)?(\d+(?:\.\d+)?)W", str(mode or ""))
        return float(match.group(1)) if match else None

    def _measured_sensors(self) -> List[Sensor]:
        rails = discover_rails(self.root, self._opener)
        if not rails:
            self.sensor_problems.append(
                f"ina3221/ina238: no power monitor rails under {self.root} "
                f"(looked in {', '.join(HWMON_GLOBS)} and {IIO_GLOB})"
            )
        return rail_sensors(rails)
