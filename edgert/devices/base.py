"""The device and sensor interface every vendor implements, and the energy meter.

A ``Device`` describes one piece of hardware (``info()``), lists its power sensors, best
first (``sensors()``), and may offer a ``PowerKnob`` (``power_knob()``). A ``Sensor``
returns a ``PowerReading``: instantaneous power, a cumulative energy counter, or both,
labelled *measured* or *estimated*. The
``EnergyMeter`` turns one sensor into the energy spent over an interval, from counter
differences where the sensor has a counter and from sampled power otherwise.

Code that reads sysfs takes a filesystem ``root`` (tests point it at a fake tree) and an
``opener`` (tests make a file raise ``PermissionError``, which chmod cannot do for root).
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Callable, Dict, List, Optional, Sequence

from ..errors import DeviceError, SensorUnavailable

MEASURED = "measured"
ESTIMATED = "estimated"
PROVENANCES = (MEASURED, ESTIMATED)
DEVICE_KINDS = ("cpu", "nvidia-gpu", "jetson", "raspberry-pi")

Opener = Callable[..., IO[str]]
# Injected instead of subprocess.run: takes argv, returns stdout; raises OSError or
# subprocess.SubprocessError when the command is missing or fails.
Runner = Callable[[Sequence[str]], str]

# The estimate used when no sensor exists: idle floor of 10 % of TDP, rising with the cube
# of utilisation (dynamic power ~ f·V², and DVFS raises V with f).
ESTIMATE_IDLE_FRACTION = 0.1
ESTIMATE_FORMULA = "estimate:tdp*(0.1+0.9*load^3)"


@dataclass
class DeviceInfo:
    """What a device is. ``details`` keys carry their unit (``memory_bytes``, ``max_freq_mhz``)."""

    kind: str
    name: str
    vendor: str
    details: Dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PowerReading:
    """One sensor sample. ``energy_j`` is a monotonic counter (wraparound already handled)."""

    power_w: Optional[float]
    energy_j: Optional[float]
    provenance: str
    source: str
    timestamp_s: float


@dataclass
class EnergyResult:
    """Energy spent over one metered interval."""

    energy_j: float
    avg_power_w: float
    duration_s: float
    provenance: str
    source: str
    samples: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class Sensor(ABC):
    """A source of power/energy readings."""

    name: str = "sensor"
    provenance: str = MEASURED

    @abstractmethod
    def read(self) -> PowerReading:
        """Take one reading; raise ``SensorUnavailable`` if the sensor cannot be read."""

    def _reading(self, power_w: Optional[float] = None, energy_j: Optional[float] = None,
                 source: Optional[str] = None) -> PowerReading:
        return PowerReading(power_w, energy_j, self.provenance, source or self.name, time.monotonic())

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} ({self.provenance})>"


@dataclass(frozen=True)
class PowerSetting:
    """One position of a knob: what it is called and the watts it is rated for (None: unrated)."""

    id: str
    label: str
    power_w: Optional[float]


class PowerKnob(ABC):
    """A device-wide power setting the runtime can move to honour a watt limit.

    On CPUs the knob is the thread count, which the planner chooses per request; boards
    and GPUs have a device-wide setting (Jetson: nvpmodel modes; NVIDIA GPUs: the board
    power limit). A knob that cannot act (no permission, missing tool) raises DeviceError
    with the reason; the runtime records it and carries on, because a robot must still get
    its answer.
    """

    name = ""

    @abstractmethod
    def settings(self) -> List[PowerSetting]: ...

    @abstractmethod
    def current(self) -> Optional[PowerSetting]: ...

    @abstractmethod
    def choose(self, power_w: Optional[float]) -> PowerSetting: ...

    @abstractmethod
    def apply(self, setting: PowerSetting) -> None: ...

    def apply_limit(self, power_w: Optional[float]) -> PowerSetting:
        """Move the knob to the setting for ``power_w`` (None: no limit); no-op if already there."""
        setting = self.choose(power_w)
        now = self.current()
        if now is None or now.id != setting.id:
            self.apply(setting)
        return setting


class Device(ABC):
    """One piece of hardware that runs models: a CPU, a GPU, a board."""

    kind: str = ""
    # TDP the estimate sensor falls back to when neither the caller nor the device knows one.
    default_tdp_w: float = 15.0

    def __init__(self) -> None:
        self.tdp_w: Optional[float] = None  # set by the profiler from the device prior
        self.sensor_problems: List[str] = []  # why better sensors were skipped, one line each

    @abstractmethod
    def info(self) -> DeviceInfo: ...

    @abstractmethod
    def _measured_sensors(self) -> List[Sensor]:
        """Measured sensors, best first; record skipped ones in ``sensor_problems``."""

    def _known_tdp_w(self) -> Optional[float]:
        """A TDP the device itself reports (power limit, power mode), if any."""
        return None

    def power_knob(self) -> Optional[PowerKnob]:
        """The device-wide power setting the runtime may move (None: the device has none);
        DeviceError when the device has one that cannot be read."""
        return None

    def sensors(self, tdp_w: Optional[float] = None) -> List[Sensor]:
        """Sensors best first; never empty: ends with the TDP-based estimate."""
        self.sensor_problems = []
        found = self._measured_sensors()
        tdp = tdp_w or self.tdp_w or self._known_tdp_w()
        tdp_source = "given" if (tdp_w or self.tdp_w) else ("device" if tdp else "default")
        found.append(EstimatedSensor(tdp or self.default_tdp_w, tdp_source=tdp_source))
        return found

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.kind}>"


class EstimatedSensor(Sensor):
    """Power = TDP × (0.1 + 0.9 · load³), load in [0, 1]; for devices without a sensor.

    ``load`` defaults to system-wide CPU utilisation since the previous reading (psutil).
    """

    provenance = ESTIMATED

    def __init__(self, tdp_w: float, load: Optional[Callable[[], float]] = None, tdp_source: str = "given"):
        if not tdp_w or tdp_w <= 0:
            raise DeviceError(f"the power estimate needs a positive TDP in watts, found {tdp_w!r}")
        self.tdp_w = float(tdp_w)
        self.tdp_source = tdp_source
        self.name = f"estimate(tdp={self.tdp_w:g}W,{tdp_source})"
        if load is None:
            import psutil

            psutil.cpu_percent(interval=None)  # the first call only starts the interval
            load = lambda: psutil.cpu_percent(interval=None) / 100.0  # noqa: E731
        self._load = load

    def power_for_load(self, load: float) -> float:
        load = min(max(float(load), 0.0), 1.0)
        return self.tdp_w * (ESTIMATE_IDLE_FRACTION + (1 - ESTIMATE_IDLE_FRACTION) * load**3)

    def read(self) -> PowerReading:
        return self._reading(power_w=self.power_for_load(self._load()), source=ESTIMATE_FORMULA)


class EnergyMeter:
    """Integrates one sensor over an interval.

    With an energy counter the result is the counter difference; the background thread
    still reads it every ``interval_s`` so counter wraparound is seen. Without one, power
    samples taken every ``interval_s`` are integrated with the trapezoidal rule.
    """

    def __init__(self, sensor: Sensor, interval_s: float = 0.05):
        if interval_s <= 0:
            raise DeviceError(f"sampling interval must be positive, found {interval_s!r} s")
        self.sensor = sensor
        self.interval_s = interval_s
        self.result: Optional[EnergyResult] = None
        self._samples: List[PowerReading] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None

    def __enter__(self) -> "EnergyMeter":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self.stop()

    def start(self) -> None:
        if self._thread is not None:
            raise DeviceError("energy meter is already running; call stop() first")
        self._samples = [self.sensor.read()]
        self._check(self._samples[0])
        self._error = None
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"energy-meter:{self.sensor.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                reading = self.sensor.read()
            except BaseException as exc:  # re-raised by stop()
                self._error = exc
                return
            with self._lock:
                self._samples.append(reading)

    def stop(self) -> EnergyResult:
        if self._thread is None:
            raise DeviceError("energy meter was not started")
        self._stop.set()
        self._thread.join()
        self._thread = None
        if self._error is not None:
            raise self._error
        last = self.sensor.read()
        with self._lock:
            samples = self._samples + [last]
        self.result = integrate(samples)
        return self.result

    def _check(self, reading: PowerReading) -> None:
        if reading.energy_j is None and reading.power_w is None:
            raise SensorUnavailable(f"sensor {self.sensor.name} returned neither power nor energy")


def integrate(samples: Sequence[PowerReading]) -> EnergyResult:
    """Energy over a series of readings: counter difference, else trapezoidal power."""
    if len(samples) < 2:
        raise DeviceError(f"need at least two readings to integrate, found {len(samples)}")
    first, last = samples[0], samples[-1]
    duration_s = last.timestamp_s - first.timestamp_s
    if first.energy_j is not None and last.energy_j is not None:
        energy_j = last.energy_j - first.energy_j
        if energy_j < 0:
            raise DeviceError(
                f"energy counter of {first.source} went backwards ({first.energy_j} J -> {last.energy_j} J)"
            )
    else:
        points = [(s.timestamp_s, s.power_w) for s in samples if s.power_w is not None]
        if len(points) < 2:
            raise DeviceError(f"sensor {first.source} gave fewer than two power readings")
        energy_j = sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in zip(points, points[1:]))
    avg_power_w = energy_j / duration_s if duration_s > 0 else 0.0
    return EnergyResult(energy_j, avg_power_w, duration_s, first.provenance, first.source, len(samples))


# ----------------------------------------------------------------------- sysfs helpers
def read_text(path: Path, opener: Opener = open) -> str:
    """Read a sysfs/procfs file, translating OS errors into ``SensorUnavailable``."""
    try:
        with opener(path, "r") as handle:
            return handle.read().replace("\x00", "").strip()
    except PermissionError as exc:
        raise SensorUnavailable(f"{path} exists but is not readable by this user: {exc.strerror or exc}") from exc
    except FileNotFoundError as exc:
        raise SensorUnavailable(f"expected {path}, found no such file") from exc
    except OSError as exc:
        raise SensorUnavailable(f"reading {path} failed: {exc}") from exc


def read_number(path: Path, opener: Opener = open) -> float:
    text = read_text(path, opener)
    try:
        return float(text.split()[0])
    except (ValueError, IndexError) as exc:
        raise SensorUnavailable(f"expected a number in {path}, found {text[:40]!r}") from exc


def try_read(path: Path, opener: Opener = open) -> Optional[str]:
    """The file's text, or None when it is absent or unreadable (optional device facts)."""
    try:
        return read_text(path, opener)
    except SensorUnavailable:
        return None


def under(root: Path, absolute: str) -> Path:
    """``absolute`` (e.g. ``/sys/class/powercap``) inside the filesystem ``root``."""
    return Path(root) / absolute.lstrip("/")


def default_run(argv: Sequence[str]) -> str:
    import subprocess

    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=5, check=True)
    return done.stdout
