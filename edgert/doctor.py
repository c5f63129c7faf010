"""``edgert doctor``: what this machine can do, and why not.

Each ``Check`` covers one area (CPU and memory limits, the llama.cpp build, ONNX Runtime,
onnxruntime-genai, TensorRT, NVIDIA GPUs, the board, power sensors, power knobs, the device
state) with a status (``ok``, ``warn``, ``missing``, ``error``; ``info`` for facts), a
one-line finding, its details, and the command that fixes it where there is one.
``error`` means an installation edgert cannot use as it is (llama-cpp-python without the
symbols edgert calls, two ONNX Runtime wheels in one environment); ``edgert doctor`` exits
non-zero only then.

Everything the checks touch is injected through ``Environment`` (filesystem root, NVML
module, command runner, importer, package versions, user id), so the fake device trees in
the tests exercise the same code that runs on a Jetson.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from .devices import detect_devices
from .devices.base import MEASURED, Device, Runner, try_read, under
from .devices.jetson import JetsonDevice, jetpack_for_l4t
from .devices.nvidia import NvidiaGpu
from .devices.state import StateReader
from .errors import BackendUnavailableError, DeviceError, EdgertError
from .runners.llama_cpp import LLAMA_DISTRIBUTION, check_symbols, supported_range
from .runners.onnxruntime import installed_ort_wheels, wheel_conflict
from .version import distribution_version

OK, WARN, MISSING, ERROR, INFO = "ok", "warn", "missing", "error", "info"

# CUDA compute capability of the Jetson modules (NVIDIA, "CUDA GPUs - Compute Capability");
# used for the build command where neither NVML nor the CUDA runtime can say.
JETSON_CUDA_ARCH = (("Thor", "110"), ("Orin", "87"), ("Xavier", "72"), ("TX2", "62"), ("Nano", "53"), ("TX1", "53"))

CGROUP_V2 = "/sys/fs/cgroup"
PROC_CGROUP = "/proc/self/cgroup"
UNLIMITED_BYTES = 1 << 62  # cgroup v1 reports "no limit" as a page-rounded 2^63 - 1


@dataclass
class Environment:
    """What the checks read; tests replace each part."""

    root: Path = Path("/")
    nvml: Any = None  # None: import pynvml if installed
    run: Optional[Runner] = None
    import_module: Callable[[str], Any] = importlib.import_module
    version_of: Callable[[str], Optional[str]] = distribution_version
    euid: int = field(default_factory=lambda: os.geteuid() if hasattr(os, "geteuid") else 0)
    platform: str = sys.platform


@dataclass
class Check:
    area: str
    status: str
    summary: str
    details: Dict[str, Any] = field(default_factory=dict)
    fix: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------ CPU and memory
def cgroup_limits(root: Path = Path("/")) -> Dict[str, Any]:
    """The CPU quota (in CPUs) and memory limit (bytes) of this process's cgroup, v2 or v1;
    None where there is no limit or nothing to read."""
    out: Dict[str, Any] = {"cpus": None, "memory_bytes": None, "version": None}
    lines = (try_read(under(root, PROC_CGROUP)) or "").splitlines()
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":  # cgroup v2: "0::/path"
            base = _existing(under(root, CGROUP_V2), path)
            cpu = (try_read(base / "cpu.max") or "").split()
            if len(cpu) == 2 and cpu[0] != "max" and cpu[0].isdigit() and cpu[1].isdigit():
                out["cpus"] = int(cpu[0]) / int(cpu[1])
            memory = try_read(base / "memory.max") or ""
            if memory.isdigit():
                out["memory_bytes"] = int(memory)
            if (base / "cpu.max").exists() or (base / "memory.max").exists():
                out["version"] = 2
        else:
            names = controllers.split(",")
            base = _existing(under(root, CGROUP_V2) / controllers, path)
            if "cpu" in names:
                quota, period = try_read(base / "cpu.cfs_quota_us"), try_read(base / "cpu.cfs_period_us")
                if quota and period and quota.isdigit() and period.isdigit() and int(period) > 0:
                    out["cpus"] = int(quota) / int(period)
                out["version"] = out["version"] or 1
            if "memory" in names:
                limit = try_read(base / "memory.limit_in_bytes") or ""
                if limit.isdigit() and int(limit) < UNLIMITED_BYTES:
                    out["memory_bytes"] = int(limit)
                out["version"] = out["version"] or 1
    return out


def _existing(base: Path, path: str) -> Path:
    """The cgroup's own directory, or the hierarchy's root where a namespace hides the path."""
    own = base / path.lstrip("/")
    return own if own.is_dir() else base


def check_cpu(env: Environment, cpu: Device) -> Check:
    info = cpu.info()
    details = dict(info.details)
    limits = cgroup_limits(env.root)
    details["cgroup"] = limits
    if env.root == Path("/") and hasattr(os, "sched_getaffinity"):
        details["usable_cpus"] = len(os.sched_getaffinity(0))
    parts = [info.name, f"{details.get('cores', '?')} cores / {details.get('threads', '?')} threads"]
    memory = details.get("memory_bytes")
    if memory:
        parts.append(f"{memory / 2**30:.1f} GiB")
    if limits["cpus"] is not None:
        parts.append(f"cgroup limit {limits['cpus']:g} CPUs")
    if limits["memory_bytes"] is not None:
        parts.append(f"cgroup memory limit {limits['memory_bytes'] / 2**30:.1f} GiB")
    status = OK
    fix = None
    cores = details.get("cores")
    if limits["cpus"] is not None and isinstance(cores, int) and limits["cpus"] < cores:
        status = WARN
        fix = f"the cgroup allows {limits['cpus']:g} of {cores} cores: run with --threads {max(1, int(limits['cpus']))}"
    return Check("cpu", status, ", ".join(parts), details, fix)


# ------------------------------------------------------------------------ engines
def cuda_arch(capability: Optional[str]) -> Optional[str]:
    """'8.9' -> '89' (CMAKE_CUDA_ARCHITECTURES)."""
    match = re.fullmatch(r"(\d+)\.(\d+)", capability or "")
    return f"{match.group(1)}{match.group(2)}" if match else None


def jetson_arch(model: str) -> Optional[str]:
    return next((arch for name, arch in JETSON_CUDA_ARCH if name.lower() in model.lower()), None)


def llama_build_command(backend: str, arch: Optional[str] = None, version: Optional[str] = None) -> str:
    """The pip command that rebuilds llama-cpp-python for ``backend`` ('cuda' or 'metal'),
    for one CUDA architecture when known (a build for every architecture takes far longer)."""
    flags = "-DGGML_METAL=on" if backend == "metal" else "-DGGML_CUDA=on"
    if backend == "cuda" and arch:
        flags += f" -DCMAKE_CUDA_ARCHITECTURES={arch}"
    spec = f"{LLAMA_DISTRIBUTION}=={version}" if version else supported_range()
    return f"CMAKE_ARGS=\"{flags}\" pip install --force-reinstall --no-cache-dir --no-deps \"{spec}\""


def check_llama(env: Environment, gpus: List[Dict[str, Any]], jetson_model: Optional[str]) -> Check:
    version = env.version_of(LLAMA_DISTRIBUTION)
    try:
        module = env.import_module("llama_cpp")
    except ImportError as exc:
        return Check("llama.cpp", ERROR, f"llama-cpp-python is not importable: {exc}", {},
                     f"pip install '{supported_range()}'")
    try:
        check_symbols(module)
    except BackendUnavailableError as exc:
        return Check("llama.cpp", ERROR, str(exc), {"version": version}, f"pip install '{supported_range()}'")
    offload = bool(module.llama_supports_gpu_offload())
    system_info = module.llama_print_system_info()
    system_info = system_info.decode(errors="replace") if isinstance(system_info, bytes) else str(system_info)
    details = {"version": version, "gpu_offload": offload, "system_info": system_info.strip(" |"),
               "supported": supported_range()}
    backend = "GPU offload" if offload else "CPU only"
    has_gpu = bool(gpus) or jetson_model is not None
    if offload or not (has_gpu or env.platform == "darwin"):
        return Check("llama.cpp", OK, f"llama-cpp-python {version}, {backend}", details)
    if env.platform == "darwin":
        fix = llama_build_command("metal", version=version)
    else:
        arch = cuda_arch(gpus[0].get("compute_capability")) if gpus else None
        arch = arch or (jetson_arch(jetson_model) if jetson_model else None)
        fix = llama_build_command("cuda", arch, version)
        if jetson_model:
            fix = "export PATH=/usr/local/cuda/bin:$PATH; " + fix
    where = "this Mac's GPU (Metal)" if env.platform == "darwin" else "the GPU this machine has"
    return Check("llama.cpp", WARN, f"llama-cpp-python {version} was built for the CPU only and cannot use {where}",
                 details, fix)


def check_onnxruntime(env: Environment) -> Check:
    wheels = installed_ort_wheels(env.version_of)
    conflict = wheel_conflict(wheels)
    if conflict:
        return Check("onnxruntime", ERROR, conflict[0], {"wheels": wheels}, conflict[1])
    try:
        module = env.import_module("onnxruntime")
    except ImportError:
        return Check("onnxruntime", MISSING, "ONNX Runtime is not installed", {}, "pip install onnxruntime")
    providers = list(module.get_available_providers())
    details = {"version": getattr(module, "__version__", None), "wheels": wheels, "providers": providers}
    gpu = [p for p in providers if p in ("CUDAExecutionProvider", "TensorrtExecutionProvider", "DmlExecutionProvider")]
    short = ", ".join(p.replace("ExecutionProvider", "") for p in providers)
    return Check("onnxruntime", OK, f"onnxruntime {details['version']}: {short}" + ("" if gpu else " (no GPU provider)"),
                 details)


def check_optional(env: Environment, area: str, module_name: str, distribution: str, fix: str) -> Check:
    try:
        module = env.import_module(module_name)
    except ImportError:
        return Check(area, MISSING, f"{distribution} is not installed", {}, fix)
    except Exception as exc:  # a broken native library (e.g. a CUDA mismatch) raises other errors at import
        return Check(area, ERROR, f"{distribution} is installed but does not import: {type(exc).__name__}: {exc}", {}, fix)
    version = getattr(module, "__version__", None) or env.version_of(distribution)
    return Check(area, OK, f"{distribution} {version}", {"version": version})


# ------------------------------------------------------------------------ devices
def check_nvidia(env: Environment, devices: List[Device], notes: List[str]) -> Tuple[Check, List[Dict[str, Any]]]:
    gpus = [d for d in devices if isinstance(d, NvidiaGpu)]
    if not gpus:
        reason = next((n.split(": ", 1)[-1] for n in notes if n.startswith("nvidia:")), "NVML lists no GPU")
        if any(d.kind == "jetson" for d in devices):
            return Check("nvidia", INFO, f"Jetson: the GPU is part of the SoC, see 'board' (NVML: {reason})"), []
        driver = [p for p in ("/dev/nvidia0", "/proc/driver/nvidia") if under(env.root, p).exists()]
        if not driver:
            return Check("nvidia", INFO, "no NVIDIA GPU (no driver: /dev/nvidia0 and /proc/driver/nvidia absent)"), []
        fix = "pip install nvidia-ml-py" if "pynvml" in reason else "check the driver with nvidia-smi"
        return Check("nvidia", WARN, f"an NVIDIA driver is present ({driver[0]}) but NVML cannot list GPUs: {reason}",
                     {}, fix), []
    infos = []
    for gpu in gpus:
        info = gpu.info()
        infos.append({"name": info.name, **info.details})
    summary = "; ".join(f"{g['name']} (compute {g.get('compute_capability', '?')}, "
                        f"{(g.get('memory_bytes') or 0) / 2**30:.0f} GiB)" for g in infos)
    driver = infos[0].get("driver_version")
    return Check("nvidia", OK, summary + (f", driver {driver}" if driver else ""), {"gpus": infos}), infos


def check_board(env: Environment, devices: List[Device]) -> Optional[Check]:
    for device in devices:
        if device.kind == "jetson":
            info = device.info()
            release = info.details.get("l4t_release")
            jetpack = jetpack_for_l4t(release)
            mode = info.details.get("power_mode") or info.details.get("power_mode_id")
            parts = [info.name, f"L4T {release}" if release else "L4T unknown",
                     f"JetPack {jetpack}" if jetpack else "JetPack unknown", f"power mode {mode}" if mode else ""]
            return Check("board", OK, ", ".join(p for p in parts if p), {**info.details, "jetpack": jetpack})
        if device.kind == "raspberry-pi":
            info = device.info()
            return Check("board", OK, info.name, info.details)
    return None


def check_sensors(devices: List[Device]) -> List[Check]:
    """Each device's best power sensor, or why it has none (a board's rails measure its CPU too)."""
    out = []
    board = any(d.kind in ("jetson", "raspberry-pi") for d in devices)
    for device in devices:
        if board and device.kind == "cpu":
            continue
        sensors = device.sensors()
        measured = [s.name for s in sensors if s.provenance == MEASURED]
        details = {"sensors": [s.name for s in sensors], "skipped": list(device.sensor_problems)}
        if measured:
            out.append(Check(f"power:{device.kind}", OK, f"measured by {measured[0]}", details))
        else:
            reasons = "; ".join(device.sensor_problems) or "no power sensor"
            out.append(Check(f"power:{device.kind}", WARN, f"estimated from TDP ({reasons})", details))
    return out


def check_knobs(env: Environment, devices: List[Device]) -> List[Check]:
    out = []
    for device in devices:
        if device.kind == "cpu":
            out.append(Check("knob:cpu", OK, "threads: the planner chooses them per request (no root needed)"))
            continue
        try:
            knob = device.power_knob()
        except DeviceError as exc:
            out.append(Check(f"knob:{device.kind}", WARN, str(exc)))
            continue
        if knob is None:
            continue
        settings = ", ".join(s.label for s in knob.settings())
        if env.euid != 0:
            what = "nvpmodel -m" if isinstance(device, JetsonDevice) else "the NVML power limit (like nvidia-smi -pl)"
            out.append(Check(f"knob:{device.kind}", WARN, f"{knob.name} ({settings}) needs root to change: {what}",
                             {"settings": settings}, "run edgert as root (sudo) to let --power move it"))
        else:
            out.append(Check(f"knob:{device.kind}", OK, f"{knob.name}: {settings}", {"settings": settings}))
    return out


def check_state(env: Environment, nvml: Any) -> Check:
    state = StateReader(env.root, nvml=nvml if nvml is not None else False, run=env.run).read()
    data = state.to_dict()
    parts = []
    if state.cpu_freq_mhz is not None:
        parts.append(f"CPU {state.cpu_freq_mhz:.0f} MHz")
    if state.cpu_governor:
        parts.append(f"governor {state.cpu_governor}")
    if state.temperatures_c:
        hottest = max(state.temperatures_c.items(), key=lambda kv: kv[1])
        parts.append(f"hottest {hottest[0]} {hottest[1]:.0f} °C")
    if state.power_mode is not None:
        parts.append(f"power mode {state.power_mode}")
    if state.jetson_clocks is not None:
        parts.append(f"jetson_clocks {'on' if state.jetson_clocks else 'off'}")
    slow = state.slowdowns()
    if slow:
        parts.append("slowed by " + ", ".join(slow))
    unreadable = f" (unreadable: {', '.join(state.unreadable)})" if state.unreadable else ""
    fix = ("for steady timings: sudo jetson_clocks (pins the clocks at the power mode's maximum)"
           if state.jetson_clocks is False else None)
    return Check("state", WARN if slow else INFO, (", ".join(parts) or "nothing readable") + unreadable, data, fix)


# ------------------------------------------------------------------------ all of it
def diagnose(env: Optional[Environment] = None) -> List[Check]:
    """Every check, in the order a person reads them."""
    env = env or Environment()
    notes: List[str] = []
    try:
        devices = detect_devices(env.root, nvml=env.nvml, run=env.run, notes=notes)
    except EdgertError as exc:
        return [Check("devices", ERROR, f"device detection failed: {exc}")]
    nvidia, gpus = check_nvidia(env, devices, notes)
    jetson = next((d for d in devices if d.kind == "jetson"), None)
    jetson_model = jetson.info().name if jetson is not None else None
    nvml = next((d.nvml for d in devices if isinstance(d, NvidiaGpu)), None)
    checks = [check_cpu(env, devices[0]), check_llama(env, gpus, jetson_model), check_onnxruntime(env),
              check_optional(env, "onnxruntime-genai", "onnxruntime_genai", "onnxruntime-genai",
                             "pip install onnxruntime-genai"),
              check_optional(env, "tensorrt", "tensorrt", "tensorrt",
                             "on a Jetson: use JetPack's TensorRT (python3 -m venv --system-site-packages); "
                             "elsewhere: pip install tensorrt"),
              nvidia]
    board = check_board(env, devices)
    if board is not None:
        checks.append(board)
    checks += check_sensors(devices) + check_knobs(env, devices) + [check_state(env, nvml)]
    return checks


def exit_code(checks: List[Check]) -> int:
    """1 when an installation cannot be used as it is (an ``error``), else 0."""
    return 1 if any(c.status == ERROR for c in checks) else 0
