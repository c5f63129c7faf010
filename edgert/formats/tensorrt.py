"""TensorRT engines: the compatibility key an engine depends on, and the check against a device.

An engine (plan) runs only where it was built for: the same TensorRT version (or a later
one for version-compatible plans), the same GPU compute capability unless built with a
hardware-compatibility level, the same platform and the same Jetson-ness. The converter
records ``compatibility_key()`` in the variant's manifest metadata (``engine``); the runner
compares it with this device before TensorRT deserializes a byte. Device facts (L4T and
JetPack, compute capability) come from ``edgert.devices``.
"""

from __future__ import annotations

import platform
import re
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

from ..devices.jetson import jetpack_for_l4t, read_l4t_release
from ..devices.nvidia import gpu_capability
from ..errors import BundleError

# Engine portability (TensorRT Developer Guide, "Engine Compatibility" / "Hardware
# Compatibility"; HardwareCompatibilityLevel in the Python API): without a level an engine
# runs only on the GPU model it was built for; AMPERE_PLUS runs on compute capability >= 8.0
# but is not supported on JetPack; SAME_COMPUTE_CAPABILITY (10.x) on any GPU of the same CC.
# Value: (TensorRT enum member, minimum compute capability or None for "equal").
HARDWARE_COMPATIBILITY: Dict[str, Tuple[str, Optional[Tuple[int, int]]]] = {
    "none": ("NONE", None),
    "same_compute_capability": ("SAME_COMPUTE_CAPABILITY", None),
    "ampere_plus": ("AMPERE_PLUS", (8, 0)),
}

# Distribution names the TensorRT Python bindings install under (pip wheels; JetPack's
# python3-libnvinfer ships a "tensorrt" egg-info), read without importing tensorrt.
TENSORRT_DISTRIBUTIONS = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11")


class EngineMismatchError(BundleError):
    """A TensorRT engine was built for another TensorRT version, GPU or platform."""


def parse_version(text: str) -> Tuple[int, ...]:
    """'10.3.0.30' -> (10, 3, 0, 30); trailing non-numeric parts are dropped."""
    parts = []
    for piece in str(text).split("."):
        match = re.match(r"\d+", piece)
        if not match:
            break
        parts.append(int(match.group()))
    if not parts:
        raise ValueError(f"not a version: {text!r}")
    return tuple(parts)


def installed_tensorrt_version() -> Optional[str]:
    """The installed TensorRT bindings' version, from package metadata (no import)."""
    for dist in TENSORRT_DISTRIBUTIONS:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def compatibility_key(
    *,
    tensorrt_version: Optional[str] = None,
    root: Path = Path("/"),
    nvml: Any = None,
    cuda: Any = None,
    hardware_compatibility: str = "none",
    version_compatible: bool = False,
    machine: Optional[str] = None,
) -> Dict[str, Any]:
    """What an engine depends on, for this device: recorded at build time in
    ``Artifact.metadata["engine"]`` and compared with the device at load time."""
    if hardware_compatibility not in HARDWARE_COMPATIBILITY:
        raise ValueError(f"hardware_compatibility {hardware_compatibility!r} not in {sorted(HARDWARE_COMPATIBILITY)}")
    version = tensorrt_version or installed_tensorrt_version()
    capability, gpu_name = gpu_capability(nvml, cuda)
    l4t = read_l4t_release(root)
    return {
        "tensorrt": version,
        "compute_capability": capability,
        "gpu_name": gpu_name,
        "l4t": l4t,
        "jetpack": jetpack_for_l4t(l4t),
        "platform": f"{platform.system().lower()}-{machine or platform.machine()}",
        "hardware_compatibility": hardware_compatibility,
        "version_compatible": bool(version_compatible),
    }


def _describe(key: Mapping[str, Any], with_platform: bool) -> Tuple[str, str]:
    version = key.get("tensorrt") or "unknown"
    capability = key.get("compute_capability") or "unknown"
    if key.get("jetpack"):
        where = f" (JetPack {key['jetpack']})"
    elif key.get("l4t"):
        where = f" (L4T {key['l4t']})"
    else:
        where = " (not a Jetson)"
    if with_platform:
        where += f" on {key.get('platform') or 'unknown platform'}"
    return f"TensorRT {version}", f"compute capability {capability}{where}"


def _versions_compatible(built: Tuple[int, ...], here: Tuple[int, ...], version_compatible: bool) -> bool:
    if version_compatible:  # 8.6+ version-compatible plans run on the same or a later runtime
        return built >= (8, 6) and here >= built
    n = min(len(built), len(here), 4)
    return built[:n] == here[:n]


def _capabilities_compatible(built: str, here: str, level: str) -> bool:
    minimum = HARDWARE_COMPATIBILITY.get(level, ("", None))[1]
    if minimum is None:
        return parse_version(built) == parse_version(here)
    return parse_version(here) >= minimum


def check_engine_compatible(recorded: Optional[Mapping[str, Any]], current: Mapping[str, Any]) -> None:
    """Raise EngineMismatchError (one line, both sides named) unless an engine built with
    ``recorded`` runs on a device described by ``current``."""
    if not recorded or not recorded.get("tensorrt") or not recorded.get("compute_capability"):
        raise EngineMismatchError(
            "the engine has no recorded compatibility key (TensorRT version and compute capability); "
            "rebuild it with edgert convert --to tensorrt"
        )
    level = str(recorded.get("hardware_compatibility") or "none")
    problems = []
    if not current.get("tensorrt"):
        problems.append("no TensorRT")
    elif not _versions_compatible(parse_version(recorded["tensorrt"]), parse_version(current["tensorrt"]),
                                  bool(recorded.get("version_compatible"))):
        problems.append("TensorRT version")
    if not current.get("compute_capability"):
        problems.append("no GPU")
    elif not _capabilities_compatible(recorded["compute_capability"], current["compute_capability"], level):
        problems.append("compute capability")
    if level == "ampere_plus" and current.get("l4t"):
        problems.append("hardware compatibility is not supported on JetPack")
    if bool(recorded.get("l4t")) != bool(current.get("l4t")):
        problems.append("Jetson")
    platform_differs = bool(recorded.get("platform") and current.get("platform")
                            and recorded["platform"] != current["platform"])
    if platform_differs:
        problems.append("platform")
    if not problems:
        return
    built_version, built_gpu = _describe(recorded, platform_differs)
    here_version, here_gpu = _describe(current, platform_differs)
    raise EngineMismatchError(
        f"engine built with {built_version} for {built_gpu}; this device has {here_version} and {here_gpu} "
        f"({', '.join(problems)} differ{'s' if len(problems) == 1 else ''}): rebuild the engine on this device "
        "with edgert convert --to tensorrt"
    )



def runner_options(variant: Any) -> Dict[str, Any]:
    """What the TensorRT runner takes from a bundle variant: the engine's recorded compatibility key."""
    return {"engine_key": variant.extra.get("engine")}
