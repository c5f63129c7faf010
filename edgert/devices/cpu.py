"""The host CPU: model, cores, SIMD, frequency, memory; RAPL energy counters (Intel and AMD)."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..errors import SensorUnavailable
from .base import Device, DeviceInfo, Opener, PowerReading, Sensor, read_number, read_text, try_read, under

# Files read, relative to the filesystem root. Sources: Linux Documentation/filesystems/proc.rst
# (cpuinfo, meminfo), Documentation/admin-guide/pm/cpufreq.rst (scaling_governor,
# cpuinfo_max_freq in kHz), Documentation/ABI/stable/sysfs-devices-system-cpu (topology),
# Documentation/power/powercap/powercap.rst (intel-rapl zones).
CPUINFO = "/proc/cpuinfo"
MEMINFO = "/proc/meminfo"  # MemTotal in kB (KiB)
CPU_SYSFS = "/sys/devices/system/cpu"
CPUFREQ_GOVERNOR = "cpufreq/scaling_governor"
CPUFREQ_MAX_KHZ = "cpufreq/cpuinfo_max_freq"
TOPOLOGY_PACKAGE = "topology/physical_package_id"
TOPOLOGY_SIBLINGS = "topology/thread_siblings_list"
POWERCAP = "/sys/class/powercap"

# RAPL zone files: name ("package-0", "core", "uncore", "dram", "psys"), a microjoule
# counter that wraps at max_energy_range_uj. Since Linux 5.10 energy_uj is mode 0400
# (root only), after CVE-2020-8694 ("Platypus"). AMD Zen exposes the same tree through
# intel_rapl (package and core zones) since Linux 5.8.
RAPL_ZONE_GLOB = "intel-rapl:*"
RAPL_NAME = "name"
RAPL_ENERGY_UJ = "energy_uj"
RAPL_MAX_RANGE_UJ = "max_energy_range_uj"
UJ_PER_J = 1e6

# /proc/cpuinfo flags that matter for inference kernels (x86 "flags", ARM "Features").
SIMD_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
    "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16",
    "asimd", "fphp", "asimdhp", "asimddp", "sve", "sve2", "i8mm", "bf16",
)

# Arm CPUs report an implementer/part pair instead of a model name
# (Arm "Main ID Register" part numbers; NVIDIA implementer 0x4e).
ARM_PARTS = {
    ("0x41", "0xd03"): "Cortex-A53",
    ("0x41", "0xd07"): "Cortex-A57",
    ("0x41", "0xd08"): "Cortex-A72",
    ("0x41", "0xd0b"): "Cortex-A76",
    ("0x41", "0xd42"): "Cortex-A78AE",
    ("0x41", "0xd4f"): "Neoverse-V2",
    ("0x4e", "0x004"): "NVIDIA Carmel",
}


class RaplZone:
    """One powercap zone: a microjoule counter made monotonic across wraparounds."""

    def __init__(self, path: Path, opener: Opener = open):
        self.path = Path(path)
        self._opener = opener
        self.zone_name = read_text(self.path / RAPL_NAME, opener)
        self.max_range_uj = read_number(self.path / RAPL_MAX_RANGE_UJ, opener)
        if self.max_range_uj <= 0:
            raise SensorUnavailable(f"expected a positive {RAPL_MAX_RANGE_UJ} in {self.path}, found {self.max_range_uj}")
        self._lock = threading.Lock()
        self._last_raw_uj = self._read_raw()
        self._wrapped_uj = 0.0

    def _read_raw(self) -> float:
        path = self.path / RAPL_ENERGY_UJ
        try:
            with self._opener(path, "r") as handle:
                return float(handle.read().strip())
        except PermissionError as exc:
            raise SensorUnavailable(
                f"RAPL counter {path} is not readable by uid {os.getuid()}: it is root-only since "
                "Linux 5.10; run as root or grant read access (e.g. a udev rule)"
            ) from exc
        except (OSError, ValueError) as exc:
            raise SensorUnavailable(f"expected a microjoule count in {path}: {exc}") from exc

    def energy_j(self) -> float:
        """The counter in joules, made monotonic by adding ``max_energy_range_uj`` per wrap.

        Correct as long as it is read at least once per wrap period (minutes to hours).
        """
        with self._lock:
            raw = self._read_raw()
            if raw < self._last_raw_uj:
                self._wrapped_uj += self.max_range_uj
            self._last_raw_uj = raw
            return (raw + self._wrapped_uj) / UJ_PER_J


class RaplSensor(Sensor):
    """Sum of one or more RAPL zones (e.g. every CPU package) as one energy counter."""

    def __init__(self, zones: List[RaplZone]):
        if not zones:
            raise SensorUnavailable("a RAPL sensor needs at least one zone")
        self.zones = zones
        self.name = "rapl:" + "+".join(z.zone_name for z in zones)

    def read(self) -> PowerReading:
        return self._reading(energy_j=sum(z.energy_j() for z in self.zones))


def rapl_zones(root: Path = Path("/"), opener: Opener = open) -> List[RaplZone]:
    """Every readable RAPL zone (packages and subzones); raise if none is readable."""
    base = under(root, POWERCAP)
    paths = sorted(p for p in base.glob(f"{RAPL_ZONE_GLOB}") if p.is_dir()) if base.is_dir() else []
    paths += sorted(p for top in paths for p in top.glob(RAPL_ZONE_GLOB) if p.is_dir())
    if not paths:
        raise SensorUnavailable(f"no RAPL zones: expected {base}/{RAPL_ZONE_GLOB}, found none")
    zones, problems, seen = [], [], set()
    for path in paths:
        if path.resolve() in seen:
            continue  # /sys/class/powercap lists subzones at the top level too (symlinks)
        seen.add(path.resolve())
        try:
            zones.append(RaplZone(path, opener))
        except SensorUnavailable as exc:
            problems.append(str(exc))
    if not zones:
        raise SensorUnavailable(problems[0])
    return zones


def rapl_sensors(root: Path = Path("/"), opener: Opener = open) -> List[RaplSensor]:
    """The package total first (all ``package-N`` zones summed), then psys, then each zone."""
    zones = rapl_zones(root, opener)
    packages = [z for z in zones if z.zone_name.startswith("package")]
    others = [z for z in zones if not z.zone_name.startswith("package")]
    sensors = [RaplSensor(packages)] if packages else []
    sensors += [RaplSensor([z]) for z in sorted(others, key=lambda z: z.zone_name != "psys")]
    if len(packages) > 1:
        sensors += [RaplSensor([z]) for z in packages]
    return sensors


class CpuDevice(Device):
    """The host CPU, described from /proc and /sys; RAPL where readable, else the estimate."""

    kind = "cpu"
    default_tdp_w = 28.0  # a typical laptop CPU; the profiler passes the prior's TDP instead

    def __init__(self, root: Path = Path("/"), opener: Opener = open):
        super().__init__()
        self.root = Path(root)
        self._opener = opener

    def info(self) -> DeviceInfo:
        cpuinfo = try_read(under(self.root, CPUINFO), self._opener) or ""
        fields = _cpuinfo_fields(cpuinfo)
        name, vendor = _model_and_vendor(fields)
        cores, threads = self._core_counts(cpuinfo)
        details: Dict[str, object] = {
            "cores": cores,
            "threads": threads,
            "simd": [f for f in SIMD_FLAGS if f in set((fields.get("flags") or fields.get("Features") or "").split())],
            "arch": "arm" if "CPU implementer" in fields else "x86",
        }
        governor, max_freq_mhz = self._cpufreq()
        if governor:
            details["governor"] = governor
        if max_freq_mhz:
            details["max_freq_mhz"] = max_freq_mhz
        memory = _meminfo_total_bytes(try_read(under(self.root, MEMINFO), self._opener) or "")
        if memory:
            details["memory_bytes"] = memory
        return DeviceInfo(self.kind, name, vendor, details)

    def _cpu_dirs(self) -> List[Path]:
        base = under(self.root, CPU_SYSFS)
        return sorted(p for p in base.glob("cpu[0-9]*") if p.is_dir()) if base.is_dir() else []

    def _core_counts(self, cpuinfo: str) -> Tuple[int, int]:
        cpus = self._cpu_dirs()
        cores = set()
        for cpu in cpus:
            siblings = try_read(cpu / TOPOLOGY_SIBLINGS, self._opener)
            package = try_read(cpu / TOPOLOGY_PACKAGE, self._opener)
            cores.add((package, siblings or cpu.name))
        threads = len(cpus)
        if not threads:
            blocks = [b for b in cpuinfo.split("\n\n") if b.strip().startswith("processor")]
            threads = len(blocks)
            cores = {(_field(b, "physical id"), _field(b, "core id") or str(i)) for i, b in enumerate(blocks)}
        threads = threads or os.cpu_count() or 1
        return (len(cores) or threads), threads

    def _cpufreq(self) -> Tuple[Optional[str], Optional[float]]:
        governors, max_khz = set(), []
        for cpu in self._cpu_dirs():
            governor = try_read(cpu / CPUFREQ_GOVERNOR, self._opener)
            if governor:
                governors.add(governor)
            khz = try_read(cpu / CPUFREQ_MAX_KHZ, self._opener)
            if khz and khz.isdigit():
                max_khz.append(int(khz))
        governor = ",".join(sorted(governors)) if governors else None
        return governor, (max(max_khz) / 1000 if max_khz else None)

    def _measured_sensors(self) -> List[Sensor]:
        try:
            return list(rapl_sensors(self.root, self._opener))
        except SensorUnavailable as exc:
            self.sensor_problems.append(f"rapl: {exc}")
            return []


def _cpuinfo_fields(cpuinfo: str) -> Dict[str, str]:
    """Fields of the first processor block, plus board-wide fields (ARM 'Hardware', 'Model')."""
    out: Dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if sep and key and key not in out:
            out[key] = value.strip()
    return out


def _field(block: str, key: str) -> Optional[str]:
    match = re.search(rf"^{re.escape(key)}\s*:\s*(.*)$", block, re.M)
    return match.group(1).strip() if match else None


def _model_and_vendor(fields: Dict[str, str]) -> Tuple[str, str]:
    if "model name" in fields:
        vendor = {"GenuineIntel": "Intel", "AuthenticAMD": "AMD"}.get(fields.get("vendor_id", ""), fields.get("vendor_id", "unknown"))
        return fields["model name"], vendor
    implementer = fields.get("CPU implementer", "").lower()
    part = fields.get("CPU part", "").lower()
    if implementer:
        vendor = {"0x41": "Arm", "0x4e": "NVIDIA"}.get(implementer, implementer)
        return ARM_PARTS.get((implementer, part), f"Arm CPU part {part or '?'}"), vendor
    return "unknown CPU", "unknown"


def _meminfo_total_bytes(meminfo: str) -> Optional[int]:
    match = re.search(r"^MemTotal:\s+(\d+)\s*kB", meminfo, re.M)
    return int(match.group(1)) * 1024 if match else None


def default_threads() -> int:
    """Physical cores are what llama.cpp scales with; fall back to logical CPUs."""
    try:
        import psutil

        cores = psutil.cpu_count(logical=False)
    except Exception:  # psutil missing or unable to tell
        cores = None
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or available or 1, available or 1))
