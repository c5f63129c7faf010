"""Datasheet priors: vendor figures for devices the user may not have.

A prior lets the planner predict latency and energy for a device before (or without) measuring
it; a measured profile refines it. Every numeric figure in a prior must name its source, so the
priors live as JSON in ``edgert.profiles/priors`` with a ``sources`` map (figure path -> reference
key) and a ``references`` table (key -> title, url, accessed). ``SOURCES.md`` beside them is the
human-readable version with the arithmetic of derived figures.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Mapping

from edgert.errors import ProfileError

SCHEMA_VERSION = 1
KIND = "prior"
DEVICE_CLASSES = ("jetson", "gpu", "cpu", "sbc")
PRECISIONS = ("fp32", "fp16", "int8")  # peak_tflops keys; int8 is TOPS under the same key
TERA = 1e12
GIGA = 1e9

# Required fields: dotted path -> expected JSON type(s).
_REQUIRED: dict[str, tuple[type, ...]] = {
    "schema_version": (int,),
    "kind": (str,),
    "id": (str,),
    "device.name": (str,),
    "device.class": (str,),
    "device.vendor": (str,),
    "memory.size_gb": (int, float),
    "memory.bandwidth_gbs": (int, float),
    "memory.type": (str,),
    "memory.shared_with_cpu": (bool,),
    "peak_tflops": (dict,),
    "power_modes": (list,),
    "tdp_w": (int, float),
    "sources": (dict,),
    "references": (dict,),
}
_REFERENCE_FIELDS = ("title", "url", "accessed")


@dataclass(frozen=True)
class PowerMode:
    """One power mode: its budget and, where the datasheet gives them, its own peaks."""

    name: str
    tdp_w: float
    default: bool = False
    peak_tflops: Mapping[str, float] = field(default_factory=dict)
    bandwidth_gbs: float | None = None


@dataclass(frozen=True)
class DevicePrior:
    """A validated datasheet prior. Figures are vendor peaks, not measurements."""

    id: str
    name: str
    device_class: str
    vendor: str
    memory_size_gb: float
    bandwidth_gbs: float
    memory_type: str
    shared_with_cpu: bool
    peak_tflops: Mapping[str, float]
    power_modes: tuple[PowerMode, ...]
    tdp_w: float
    idle_w: float | None
    compute_capability: str | None
    sources: Mapping[str, tuple[str, ...]]
    references: Mapping[str, Mapping[str, str]]
    path: Path | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    kind = KIND
    estimated = True  # everything predicted from a prior is an estimate, and says so

    @property
    def default_mode(self) -> PowerMode:
        return next(m for m in self.power_modes if m.default)

    def power_mode(self, name: str | None = None) -> PowerMode:
        """The named power mode (the default one when ``name`` is None)."""
        if name is None:
            return self.default_mode
        for mode in self.power_modes:
            if mode.name == name:
                return mode
        known = ", ".join(m.name for m in self.power_modes)
        raise ProfileError(f"prior {self.id!r} has no power mode {name!r}: expected one of {known}")

    def peak_flops(self, precision: str, mode: str | None = None) -> float:
        """Peak dense throughput in FLOP/s (OP/s for int8) for a precision, in a power mode."""
        pm = self.power_mode(mode)
        tflops = pm.peak_tflops.get(precision) if pm.peak_tflops else None
        if tflops is None:
            tflops = self.peak_tflops.get(precision)
        if tflops is None:
            known = ", ".join(self.peak_tflops) or "none"
            raise ProfileError(
                f"prior {self.id!r} has no peak for {precision!r}: expected one of {known}"
            )
        return float(tflops) * TERA

    @property
    def bandwidth_bytes_per_s(self) -> float:
        """Peak DRAM bandwidth of the default mode in bytes/s (GB = 1e9 bytes)."""
        return self.mode_bandwidth_bytes_per_s()

    def mode_bandwidth_bytes_per_s(self, mode: str | None = None) -> float:
        pm = self.power_mode(mode)
        gbs = pm.bandwidth_gbs if pm.bandwidth_gbs is not None else self.bandwidth_gbs
        return float(gbs) * GIGA


def priors_dir() -> Path:
    """The installed priors folder (``edgert.profiles/priors``)."""
    return Path(str(resources.files("edgert.profiles") / "priors"))


def list_priors() -> list[str]:
    """Ids of the shipped priors, sorted."""
    folder = priors_dir()
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.json"))


def load_prior(id_or_path: str | Path) -> DevicePrior:
    """Load and validate a prior by shipped id or by path to a JSON file."""
    path = _resolve(id_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read prior: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProfileError(
            f"{path}: expected a JSON prior, found invalid JSON ({exc.msg} at line {exc.lineno})"
        ) from None
    return validate_prior(data, path)


def validate_prior(data: Any, path: Path | str | None = None) -> DevicePrior:
    """Check a parsed prior document and build the ``DevicePrior``; raise ``ProfileError``."""
    where = str(path) if path is not None else "prior"

    def fail(message: str) -> ProfileError:
        return ProfileError(f"{where}: {message}")

    if not isinstance(data, dict):
        raise fail(f"expected a JSON object, found {type(data).__name__}")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise fail(f"schema_version {version!r} is not supported: expected {SCHEMA_VERSION}")
    for dotted, types in _REQUIRED.items():
        value = _get(data, dotted)
        if value is _MISSING:
            raise fail(f"missing field {dotted!r}")
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            wanted = " or ".join(t.__name__ for t in types)
            raise fail(f"field {dotted!r} should be {wanted}, found {type(value).__name__}")
    if data["kind"] != KIND:
        raise fail(f"kind {data['kind']!r}: expected {KIND!r}")
    if path is not None and Path(path).stem != data["id"]:
        raise fail(f"id {data['id']!r} does not match the file name {Path(path).stem!r}")
    if data["device"]["class"] not in DEVICE_CLASSES:
        raise fail(
            f"device.class {data['device']['class']!r}: expected one of {', '.join(DEVICE_CLASSES)}"
        )

    peaks = _check_peaks(data["peak_tflops"], "peak_tflops", fail)
    if not peaks:
        raise fail("peak_tflops is empty: expected at least one of " + ", ".join(PRECISIONS))
    modes = _check_modes(data["power_modes"], fail)
    default = next(m for m in modes if m.default)
    if not math.isclose(float(data["tdp_w"]), default.tdp_w):
        raise fail(
            f"tdp_w {data['tdp_w']} does not match the default power mode "
            f"{default.name!r} ({default.tdp_w})"
        )

    figures = dict(_figures(data))
    for fig, value in figures.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value) or value <= 0:
                raise fail(f"figure {fig!r} should be a positive number, found {value!r}")
    sources = _check_sources(data, figures, fail)
    idle = data.get("idle_w")
    cc = data["device"].get("compute_capability")

    return DevicePrior(
        id=data["id"],
        name=data["device"]["name"],
        device_class=data["device"]["class"],
        vendor=data["device"]["vendor"],
        memory_size_gb=float(data["memory"]["size_gb"]),
        bandwidth_gbs=float(data["memory"]["bandwidth_gbs"]),
        memory_type=data["memory"]["type"],
        shared_with_cpu=data["memory"]["shared_with_cpu"],
        peak_tflops=peaks,
        power_modes=modes,
        tdp_w=float(data["tdp_w"]),
        idle_w=float(idle) if idle is not None else None,
        compute_capability=str(cc) if cc is not None else None,
        sources=sources,
        references=data["references"],
        path=Path(path) if path is not None else None,
        raw=data,
    )


_MISSING = object()


def _resolve(id_or_path: str | Path) -> Path:
    text = str(id_or_path)
    if isinstance(id_or_path, Path) or text.endswith(".json") or "/" in text or "\\" in text:
        path = Path(id_or_path)
        if not path.is_file():
            raise ProfileError(f"prior file {text!r} not found: expected a JSON prior")
        return path
    known = list_priors()
    if text not in known:
        raise ProfileError(
            f"unknown device prior {text!r}: expected one of {', '.join(known) or '(none shipped)'}"
        )
    return priors_dir() / f"{text}.json"


def _get(data: Mapping[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _check_peaks(peaks: Any, where: str, fail) -> dict[str, float]:
    if not isinstance(peaks, dict):
        raise fail(f"{where} should be an object, found {type(peaks).__name__}")
    out = {}
    for key, value in peaks.items():
        if key not in PRECISIONS:
            raise fail(f"{where}.{key}: unknown precision, expected one of {', '.join(PRECISIONS)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail(f"{where}.{key} should be a number, found {type(value).__name__}")
        out[key] = float(value)
    return out


def _check_modes(modes: list, fail) -> tuple[PowerMode, ...]:
    if not modes:
        raise fail("power_modes is empty: expected at least one mode")
    out, seen = [], set()
    for i, mode in enumerate(modes):
        if not isinstance(mode, dict):
            raise fail(f"power_modes[{i}] should be an object, found {type(mode).__name__}")
        name, tdp = mode.get("name"), mode.get("tdp_w")
        if not isinstance(name, str) or not name:
            raise fail(f"power_modes[{i}] is missing field 'name'")
        if isinstance(tdp, bool) or not isinstance(tdp, (int, float)):
            raise fail(f"power mode {name!r} is missing a numeric 'tdp_w'")
        if name in seen:
            raise fail(f"power mode {name!r} appears twice")
        seen.add(name)
        bw = mode.get("bandwidth_gbs")
        out.append(
            PowerMode(
                name=name,
                tdp_w=float(tdp),
                default=mode.get("default") is True,
                peak_tflops=_check_peaks(mode.get("peak_tflops", {}), f"power_modes.{name}.peak_tflops", fail),
                bandwidth_gbs=float(bw) if bw is not None else None,
            )
        )
    defaults = [m.name for m in out if m.default]
    if len(defaults) != 1:
        raise fail(f"expected exactly one default power mode, found {len(defaults)}")
    return tuple(out)


def _figures(data: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """Every figure as (dotted path, value); power modes are addressed by name."""

    def walk(node: Any, prefix: str) -> Iterator[tuple[str, Any]]:
        if isinstance(node, dict):
            for key, value in node.items():
                yield from walk(value, f"{prefix}.{key}" if prefix else key)
        else:
            yield prefix, node

    for key in ("device", "memory", "peak_tflops", "tdp_w", "idle_w"):
        if key in data:
            yield from walk(data[key], key)
    for mode in data.get("power_modes", []):
        rest = {k: v for k, v in mode.items() if k not in ("name", "default")}
        yield from walk(rest, f"power_modes.{mode['name']}")


def _check_sources(data, figures: Mapping[str, Any], fail) -> dict[str, tuple[str, ...]]:
    references = data["references"]
    for key, ref in references.items():
        if not isinstance(ref, dict):
            raise fail(f"reference {key!r} should be an object with {', '.join(_REFERENCE_FIELDS)}")
        for name in _REFERENCE_FIELDS:
            if not isinstance(ref.get(name), str) or not ref[name]:
                raise fail(f"reference {key!r} is missing field {name!r}")
    sources: dict[str, tuple[str, ...]] = {}
    for fig, keys in data["sources"].items():
        if fig not in figures:
            raise fail(f"sources names {fig!r}, which is not a figure in this prior")
        keys = (keys,) if isinstance(keys, str) else keys
        if not isinstance(keys, (list, tuple)) or not keys or not all(isinstance(k, str) for k in keys):
            raise fail(f"sources[{fig!r}] should be a reference key or a list of keys")
        for key in keys:
            if key not in references:
                raise fail(f"sources[{fig!r}] names reference {key!r}, which is not in 'references'")
        sources[fig] = tuple(keys)
    for fig, value in figures.items():
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if numeric and fig not in sources:
            raise fail(f"figure {fig!r} has no source: expected an entry in 'sources'")
    return sources
