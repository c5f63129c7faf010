"""The state a device is measured in: clocks, governor, temperatures, throttling, power mode.

A slow run and a throttled run look alike in a latency record. ``DeviceState`` says which:
profiles record it before and after measuring, every runtime result records it, and the
runtime's online latency correction keeps one correction per *regime* (``DeviceState.key()``:
power mode, governor, pinned clocks and active throttling) instead of averaging across a
change of regime. Clock and temperature readings vary continuously, so they are recorded
but are not part of the key.

What is read (every file relative to a filesystem ``root``, so tests use fake trees):

- CPU: ``scaling_cur_freq`` (kHz, mean over CPUs), ``scaling_governor``, and Intel's
  ``thermal_throttle/{core,package}_throttle_count`` counters (a rise since the previous
  reading is a throttle event) (Linux Documentation/admin-guide/pm/cpufreq.rst,
  Documentation/ABI/testing/sysfs-devices-system-cpu);
- temperatures: ``/sys/class/thermal/thermal_zoneN/{type,temp}`` in millidegrees Celsius
  (Documentation/driver-api/thermal/sysfs-api.rst);
- NVIDIA GPUs through NVML: SM and memory clocks, temperature, and the clock event
  (throttle) reasons bitmask (nvml.h ``nvmlClocksEventReason*``);
- Jetson: the nvpmodel mode from ``/var/lib/nvpmodel/status`` (a file, not ``nvpmodel -q``,
  which is a subprocess per request), and whether ``jetson_clocks`` is on, inferred from
  the clocks it pins (every CPU's ``scaling_min_freq`` equal to its ``scaling_max_freq``
  and the GPU devfreq ``min_freq`` equal to its ``max_freq``; NVIDIA's script does exactly
  that, and reading its own state needs root);
- Raspberry Pi: ``vcgencmd get_throttled`` (bit 0 under-voltage, 1 frequency capped,
  2 throttled, 3 soft temperature limit; Raspberry Pi documentation, "vcgencmd").

A field that cannot be read is None, and ``unreadable`` says why.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..errors import BackendUnavailableError, DeviceError
from .base import Opener, Runner, default_run, try_read, under
from .cpu import CPU_SYSFS, CPUFREQ_GOVERNOR
from .jetson import DEVFREQ, GPU_DEVFREQ, NVPMODEL_STATUS, is_jetson
from .nvidia import load_nvml
from .raspberrypi import is_raspberry_pi

CPUFREQ_CUR_KHZ = "cpufreq/scaling_cur_freq"
CPUFREQ_MIN_KHZ = "cpufreq/scaling_min_freq"
CPUFREQ_LIMIT_KHZ = "cpufreq/scaling_max_freq"
THROTTLE_COUNTS = ("thermal_throttle/core_throttle_count", "thermal_throttle/package_throttle_count")
THERMAL = "/sys/class/thermal"
GET_THROTTLED = ("vcgencmd", "get_throttled")  # "throttled=0x50005"
#: a CPU throttle event (a counter rise) marks the device as throttled for this long: the
#: counters count events, not a state, and a throttled spell outlasts one request
THROTTLE_HOLD_S = 30.0
#: vcgencmd is a subprocess (milliseconds): its answer is reused for this long
SUBPROCESS_REUSE_S = 1.0
PI_THROTTLE_BITS = {0: "under_voltage", 1: "frequency_capped", 2: "throttled", 3: "soft_temperature_limit"}

# nvml.h nvmlClocksEventReason* (formerly nvmlClocksThrottleReason*) bits
NVML_CLOCK_REASONS = {
    0x1: "gpu_idle", 0x2: "applications_clocks", 0x4: "sw_power_cap", 0x8: "hw_slowdown", 0x10: "sync_boost",
    0x20: "sw_thermal", 0x40: "hw_thermal", 0x80: "hw_power_brake", 0x100: "display_clocks",
}
#: reasons that make a busy GPU run slower than its clocks allow (idle, sync boost and
#: application clocks are not slowdowns)
GPU_SLOWDOWNS = ("sw_power_cap", "hw_slowdown", "sw_thermal", "hw_thermal", "hw_power_brake")
NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 1, 2, 0


@dataclass
class DeviceState:
    """One reading of the device's state (see the module). Temperatures are in °C, clocks in MHz."""

    cpu_freq_mhz: Optional[float] = None
    cpu_governor: Optional[str] = None
    cpu_throttle_count: Optional[int] = None
    #: the throttle counter rose within the last ``StateReader.throttle_hold_s``
    cpu_throttled: Optional[bool] = None
    temperatures_c: Dict[str, float] = field(default_factory=dict)
    #: per NVIDIA GPU: index, sm_clock_mhz, memory_clock_mhz, temperature_c, clock_reasons
    gpus: List[Dict[str, Any]] = field(default_factory=list)
    power_mode: Optional[str] = None
    jetson_clocks: Optional[bool] = None
    #: Raspberry Pi firmware flags active now (under_voltage, throttled, ...)
    board_throttle: Optional[List[str]] = None
    #: field -> why it is None (missing file, no permission, library not installed)
    unreadable: Dict[str, str] = field(default_factory=dict)

    def slowdowns(self) -> List[str]:
        """What slows the device down right now: GPU throttle reasons, a CPU throttle event,
        Raspberry Pi firmware throttling; empty when nothing does (or nothing can tell)."""
        out = sorted({f"gpu{g['index']}:{r}" for g in self.gpus for r in g.get("clock_reasons") or ()
                      if r in GPU_SLOWDOWNS})
        if self.cpu_throttled:
            out.append("cpu:thermal_throttle")
        out += [f"board:{flag}" for flag in self.board_throttle or () if flag != "under_voltage"]
        return out

    def key(self) -> str:
        """The regime a latency measurement belongs to: power mode, governor, pinned clocks and
        active slowdowns (not the clock and temperature readings, which vary continuously)."""
        parts = [f"mode={self.power_mode}" if self.power_mode is not None else "",
                 f"governor={self.cpu_governor}" if self.cpu_governor else "",
                 f"jetson_clocks={'on' if self.jetson_clocks else 'off'}" if self.jetson_clocks is not None else "",
                 "slowdown=" + "+".join(self.slowdowns()) if self.slowdowns() else ""]
        return ";".join(p for p in parts if p) or "default"

    def to_dict(self) -> Dict[str, Any]:
        out = asdict(self)
        out["key"] = self.key()
        out["slowdowns"] = self.slowdowns()
        return out


def state_changes(before: Optional[Dict[str, Any]], after: Optional[Dict[str, Any]]) -> List[str]:
    """What changed between two ``DeviceState.to_dict()`` readings that matters for timing:
    the regime (``key``) and the GPU clock reasons; one line each, empty when nothing did."""
    if not before or not after:
        return []
    changes = []
    if before.get("key") != after.get("key"):
        changes.append(f"device state changed from {before.get('key')} to {after.get('key')}")
    if (after.get("cpu_throttle_count") or 0) > (before.get("cpu_throttle_count") or 0):
        changes.append(f"CPU thermal throttling: the throttle count rose by "
                       f"{after['cpu_throttle_count'] - (before.get('cpu_throttle_count') or 0)}")
    return changes


class StateReader:
    """Reads ``DeviceState`` quickly (a few sysfs files and NVML calls; no subprocess except
    ``vcgencmd`` on a Raspberry Pi). What exists is found once, at construction.

    root: filesystem root (tests: a fake tree); nvml: a pynvml-like module, None to import
    pynvml if installed, or False for no NVIDIA GPU; run: replaces subprocess (vcgencmd);
    throttle_hold_s: how long a CPU throttle event counts as a throttled state."""

    def __init__(self, root: Path = Path("/"), nvml: Any = None, run: Optional[Runner] = None,
                 opener: Opener = open, throttle_hold_s: float = THROTTLE_HOLD_S):
        self.throttle_hold_s = throttle_hold_s
        self.root = Path(root)
        self._opener = opener
        self._run = run or default_run
        base = under(self.root, CPU_SYSFS)
        self._cpus = sorted(p for p in base.glob("cpu[0-9]*") if p.is_dir()) if base.is_dir() else []
        thermal = under(self.root, THERMAL)
        self._zones = sorted(thermal.glob("thermal_zone*"), key=_zone_number) if thermal.is_dir() else []
        self._jetson = is_jetson(self.root, opener)
        self._pi = not self._jetson and is_raspberry_pi(self.root, opener)
        self._gpu_devfreq = self._find_gpu_devfreq() if self._jetson else None
        self._nvml_problem: Optional[str] = None
        self._nvml, self._handles = self._open_nvml(nvml)
        self._last_throttle_count: Optional[int] = None
        self._throttle_seen_at: Optional[float] = None
        self._pi_answer: Optional[tuple] = None  # (monotonic time, vcgencmd output or the exception)

    def _find_gpu_devfreq(self) -> Optional[Path]:
        base = under(self.root, DEVFREQ)
        nodes = sorted(base.iterdir()) if base.is_dir() else []
        return next((node for node in nodes if GPU_DEVFREQ.search(node.name)), None)

    def _open_nvml(self, nvml: Any):
        if nvml is False:
            return None, []
        try:
            module = load_nvml(nvml)
            count = int(module.nvmlDeviceGetCount())
            return module, [module.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except (BackendUnavailableError, DeviceError) as exc:
            self._nvml_problem = str(exc)
        except Exception as exc:  # an NVMLError from the count or a handle
            self._nvml_problem = f"NVML: {exc}"
        return None, []

    # ------------------------------------------------------------------ reading
    def read(self) -> DeviceState:
        state = DeviceState()
        self._read_cpu(state)
        self._read_temperatures(state)
        self._read_gpus(state)
        if self._jetson:
            self._read_jetson(state)
        if self._pi:
            self._read_pi(state)
        return state

    def _text(self, path: Path) -> Optional[str]:
        return try_read(path, self._opener)

    def _read_cpu(self, state: DeviceState) -> None:
        if not self._cpus:
            state.unreadable["cpu"] = f"expected {under(self.root, CPU_SYSFS)}/cpuN, found none"
            return
        khz = [int(t) for t in (self._text(c / CPUFREQ_CUR_KHZ) for c in self._cpus) if t and t.isdigit()]
        if khz:
            state.cpu_freq_mhz = round(sum(khz) / len(khz) / 1000, 1)
        else:
            state.unreadable["cpu_freq_mhz"] = f"no readable {CPUFREQ_CUR_KHZ} (no cpufreq driver, e.g. in a VM)"
        governors = {g for g in (self._text(c / CPUFREQ_GOVERNOR) for c in self._cpus) if g}
        if governors:
            state.cpu_governor = ",".join(sorted(governors))
        else:
            state.unreadable["cpu_governor"] = f"no readable {CPUFREQ_GOVERNOR}"
        counts = [int(t) for c in self._cpus for t in (self._text(c / name) for name in THROTTLE_COUNTS)
                  if t and t.isdigit()]
        if counts:
            total = sum(counts)
            now = time.monotonic()
            if self._last_throttle_count is not None and total > self._last_throttle_count:
                self._throttle_seen_at = now
            self._last_throttle_count = total
            state.cpu_throttle_count = total
            state.cpu_throttled = (self._throttle_seen_at is not None
                                   and now - self._throttle_seen_at <= self.throttle_hold_s)
        else:
            state.unreadable["cpu_throttle_count"] = "no thermal_throttle counters (Intel CPUs only)"

    def _read_temperatures(self, state: DeviceState) -> None:
        for zone in self._zones:
            kind = self._text(zone / "type") or zone.name
            milli = self._text(zone / "temp")
            if milli and re.fullmatch(r"-?\d+", milli):
                name = kind if kind not in state.temperatures_c else f"{kind}:{zone.name}"
                state.temperatures_c[name] = int(milli) / 1000
        if not state.temperatures_c:
            state.unreadable["temperatures_c"] = f"no readable {under(self.root, THERMAL)}/thermal_zoneN/temp"

    def _read_gpus(self, state: DeviceState) -> None:
        if self._nvml is None:
            if self._nvml_problem:
                state.unreadable["gpus"] = self._nvml_problem
            return
        for index, handle in enumerate(self._handles):
            state.gpus.append(self._read_gpu(index, handle))

    def _read_gpu(self, index: int, handle: Any) -> Dict[str, Any]:
        nvml = self._nvml
        gpu: Dict[str, Any] = {"index": index}
        calls = {
            "sm_clock_mhz": lambda: nvml.nvmlDeviceGetClockInfo(handle, NVML_CLOCK_SM),
            "memory_clock_mhz": lambda: nvml.nvmlDeviceGetClockInfo(handle, NVML_CLOCK_MEM),
            "temperature_c": lambda: nvml.nvmlDeviceGetTemperature(handle, NVML_TEMPERATURE_GPU),
            "clock_reasons": lambda: _reason_names(_clock_reasons_mask(nvml, handle)),
        }
        for key, call in calls.items():
            try:
                gpu[key] = call()
            except Exception as exc:  # NVMLError (not supported, lost GPU) or a binding without the call
                gpu[key] = None
                gpu.setdefault("unreadable", {})[key] = f"NVML: {exc}"
        return gpu

    def _read_jetson(self, state: DeviceState) -> None:
        status = self._text(under(self.root, NVPMODEL_STATUS))
        match = re.search(r"pmode:(\d+)", status or "")
        if match:
            state.power_mode = str(int(match.group(1)))
        else:
            state.unreadable["power_mode"] = f"expected 'pmode:N' in {under(self.root, NVPMODEL_STATUS)}, found {status!r}"
        state.jetson_clocks = self._jetson_clocks_pinned(state)

    def _jetson_clocks_pinned(self, state: DeviceState) -> Optional[bool]:
        pairs = [(self._text(c / CPUFREQ_MIN_KHZ), self._text(c / CPUFREQ_LIMIT_KHZ)) for c in self._cpus]
        if self._gpu_devfreq is not None:
            pairs.append((self._text(self._gpu_devfreq / "min_freq"), self._text(self._gpu_devfreq / "max_freq")))
        known = [(low, high) for low, high in pairs if low and high]
        if not known:
            state.unreadable["jetson_clocks"] = "no readable scaling_min_freq / devfreq min_freq to infer it from"
            return None
        return all(low == high for low, high in known)

    def _get_throttled(self):
        now = time.monotonic()
        if self._pi_answer is None or now - self._pi_answer[0] > SUBPROCESS_REUSE_S:
            try:
                answer = self._run(GET_THROTTLED)
            except Exception as exc:  # vcgencmd missing, or no access to /dev/vcio
                answer = exc
            self._pi_answer = (now, answer)
        return self._pi_answer[1]

    def _read_pi(self, state: DeviceState) -> None:
        text = self._get_throttled()
        if isinstance(text, Exception):
            state.unreadable["board_throttle"] = f"`{' '.join(GET_THROTTLED)}` failed: {text}"
            return
        match = re.search(r"throttled=(0x[0-9a-fA-F]+)", text)
        if not match:
            state.unreadable["board_throttle"] = f"expected 'throttled=0x...', found {text.strip()[:60]!r}"
            return
        bits = int(match.group(1), 16)
        state.board_throttle = [name for bit, name in PI_THROTTLE_BITS.items() if bits & (1 << bit)]


def _zone_number(path: Path) -> int:
    digits = re.sub(r"\D", "", path.name)
    return int(digits) if digits else 0


def _clock_reasons_mask(nvml: Any, handle: Any) -> int:
    """nvmlDeviceGetCurrentClocksEventReasons (driver 535+), else the older ...ThrottleReasons."""
    getter = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or nvml.nvmlDeviceGetCurrentClocksThrottleReasons
    return int(getter(handle))


def _reason_names(mask: int) -> List[str]:
    return [name for bit, name in NVML_CLOCK_REASONS.items() if mask & bit]


def read_state(root: Path = Path("/"), nvml: Any = None, run: Optional[Runner] = None) -> DeviceState:
    """One reading with a fresh reader (a throttle event needs two readings of one reader)."""
    return StateReader(root, nvml=nvml, run=run).read()


__all__: Sequence[str] = ("DeviceState", "StateReader", "read_state", "state_changes", "GPU_SLOWDOWNS")
