"""The TensorRT runner: decoder engines (ONNX with KV cache -> TensorRT) on NVIDIA GPUs and Jetson.

Engines are executable artifacts: a TensorRT plan can carry kernels and plugins that run on
the GPU. Give the runner only a path returned by ``Bundle.artifact()`` (sha256 checked
against the manifest) and the engine's recorded compatibility key
(``variant`` manifest metadata ``engine``); the runner compares that key with this device
*before* TensorRT deserializes a single byte and refuses a mismatched engine.

The compatibility key and its check live here, in the light library, because loading
needs them; ``edgert.converters.tensorrt_convert`` re-exports them for the build side.

Imports of ``tensorrt`` and CUDA (``cuda-python``: ``cuda.bindings.runtime``, or the older
``cuda.cudart``) are lazy: importing this module needs neither.
"""

from __future__ import annotations

import json
import logging
import platform
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import BackendUnavailableError, BundleError, DeviceError, GenerationError, ModelFileError, unavailable
from .base import Runner, _Aborted

log = logging.getLogger("edgert.tensorrt")
log.addHandler(logging.NullHandler())

TEGRA_RELEASE = "etc/nv_tegra_release"  # relative to the filesystem root

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

PREFILL_CHUNK = 256  # tokens per engine call during prefill; bounds the logits buffer
PAST_NAME = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")  # optimum's KV-cache input names


class EngineMismatchError(BundleError):
    """A TensorRT engine was built for another TensorRT version, GPU or platform."""


# ------------------------------------------------------------------ compatibility key
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


def jetpack_for_l4t(l4t: Optional[str]) -> Optional[str]:
    return JETPACK_BY_L4T.get(l4t) if l4t else None


def read_l4t_release(root: Path = Path("/")) -> Optional[str]:
    """The L4T release from ``<root>/etc/nv_tegra_release`` ('36.4.3'), None off Jetson."""
    from ..devices.jetson import parse_tegra_release

    path = Path(root) / TEGRA_RELEASE
    try:
        return parse_tegra_release(path.read_text(errors="replace"))
    except OSError:
        return None


def installed_tensorrt_version() -> Optional[str]:
    """The installed TensorRT bindings' version, from package metadata (no import)."""
    from importlib import metadata

    for dist in TENSORRT_DISTRIBUTIONS:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def _nvml_capability(nvml: Any) -> Tuple[Optional[str], Optional[str]]:
    from ..devices.nvidia import load_nvml

    module = load_nvml(nvml)
    try:
        handle = module.nvmlDeviceGetHandleByIndex(0)
        major, minor = module.nvmlDeviceGetCudaComputeCapability(handle)
        name = module.nvmlDeviceGetName(handle)
    except Exception as exc:
        error = getattr(module, "NVMLError", None)
        if isinstance(error, type) and isinstance(exc, error):
            raise DeviceError(f"NVML could not read GPU 0: {exc}") from exc
        raise
    name = name.decode() if isinstance(name, bytes) else str(name)
    return f"{int(major)}.{int(minor)}", name


def gpu_capability(nvml: Any = None, cuda: Any = None) -> Tuple[Optional[str], Optional[str]]:
    """(compute capability 'M.m', GPU name) of GPU 0: NVML first, then the CUDA runtime
    (Jetson boards before JetPack 7 have no NVML); (None, None) when neither answers."""
    try:
        return _nvml_capability(nvml)
    except (BackendUnavailableError, DeviceError) as exc:
        log.debug("NVML: %s", exc)
    try:
        runtime = cuda if cuda is not None else _CudaRuntime.load()
        major, minor, name = runtime.device_capability(0)
        return f"{major}.{minor}", name
    except (BackendUnavailableError, GenerationError) as exc:
        log.debug("CUDA runtime: %s", exc)
    return None, None


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


# --------------------------------------------------------------------------- CUDA
class _CudaRuntime:
    """The few CUDA runtime calls the runner needs, on cuda-python (NVIDIA's bindings).

    Every call returns ``(cudaError_t, *values)``; errors become ``GenerationError``.
    """

    def __init__(self, cudart: Any):
        self.rt = cudart

    @classmethod
    def load(cls) -> "_CudaRuntime":
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            try:
                from cuda import cudart  # type: ignore[no-redef]  # older cuda-python
            except ImportError:
                raise unavailable("TensorRT runner (cuda-python)", "gpu") from None
        return cls(cudart)

    def _check(self, result: Any, what: str) -> Any:
        err, values = result[0], result[1:]
        if err != self.rt.cudaError_t.cudaSuccess:
            raise GenerationError(f"CUDA {what} failed: {err}")
        return values[0] if len(values) == 1 else values

    def device_capability(self, index: int) -> Tuple[int, int, str]:
        prop = self._check(self.rt.cudaGetDeviceProperties(index), "cudaGetDeviceProperties")
        name = prop.name.decode(errors="replace").rstrip("\x00") if isinstance(prop.name, bytes) else str(prop.name)
        return int(prop.major), int(prop.minor), name

    def malloc(self, nbytes: int) -> int:
        return int(self._check(self.rt.cudaMalloc(max(int(nbytes), 1)), "cudaMalloc"))

    def free(self, pointer: int) -> None:
        self._check(self.rt.cudaFree(pointer), "cudaFree")

    def stream(self) -> Any:
        return self._check(self.rt.cudaStreamCreate(), "cudaStreamCreate")

    def destroy_stream(self, stream: Any) -> None:
        self._check(self.rt.cudaStreamDestroy(stream), "cudaStreamDestroy")

    def synchronize(self, stream: Any) -> None:
        self._check(self.rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def to_device(self, pointer: int, array: np.ndarray, stream: Any) -> None:
        array = np.ascontiguousarray(array)
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self.rt.cudaMemcpyAsync(pointer, array.ctypes.data, array.nbytes, kind, stream), "cudaMemcpyAsync")

    def to_host(self, array: np.ndarray, pointer: int, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self.rt.cudaMemcpyAsync(array.ctypes.data, pointer, array.nbytes, kind, stream), "cudaMemcpyAsync")


def _import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError:
        raise unavailable("TensorRT runner (tensorrt)", "gpu") from None
    return tensorrt


def make_logger(trt: Any) -> Any:
    """A ``trt.ILogger`` that routes TensorRT's messages to Python logging (the library never prints)
    and keeps the last errors for edgert's messages."""

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: List[str] = []

        def log(self, severity, message) -> None:
            text = str(message)
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors = (self.errors + [text])[-5:]
                log.error("%s", text)
            elif severity == trt.ILogger.Severity.WARNING:
                log.warning("%s", text)
            else:
                log.debug("%s", text)

    return _Logger()


# --------------------------------------------------------------------- tokenizer
def _bytes_to_unicode() -> Dict[int, str]:
    """GPT-2's byte <-> printable-character table used by byte-level BPE tokenizers."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = keep[:]
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(keep, map(chr, chars)))


BYTE_DECODER = {c: b for b, c in _bytes_to_unicode().items()}
BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


class HfTokenizer:
    """tokenizer.json (the ``tokenizers`` package) plus tokenizer_config / generation_config
    shipped beside the engine: ids, per-token bytes, end tokens and chat template."""

    def __init__(self, directory: Path):
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise unavailable("TensorRT runner tokenizer (tokenizers)", "gpu") from None
        path = directory / "tokenizer.json"
        if not path.is_file():
            raise ModelFileError(f"{directory}: tokenizer.json is missing (it ships beside the engine)")
        self.tokenizer = Tokenizer.from_file(str(path))
        spec = json.loads(path.read_text(encoding="utf-8"))
        self.byte_level = "ByteLevel" in json.dumps(spec.get("decoder"))
        self.special = {t["id"] for t in spec.get("added_tokens", []) if t.get("special")}
        config = _read_json(directory / "tokenizer_config.json")
        template = config.get("chat_template")
        if isinstance(template, list):
            template = next((t.get("template") for t in template if t.get("name") == "default"), None)
        self.chat_template: Optional[str] = template
        self.bos_text = _token_text(config.get("bos_token"))
        self.eos_text = _token_text(config.get("eos_token"))
        self.bos_id = self.tokenizer.token_to_id(self.bos_text) if self.bos_text else None
        ends = set()
        for name in ("generation_config.json", "config.json"):
            value = _read_json(directory / name).get("eos_token_id")
            ends.update(value if isinstance(value, list) else [value] if isinstance(value, int) else [])
        eos = self.tokenizer.token_to_id(self.eos_text) if self.eos_text else None
        if eos is not None:
            ends.add(eos)
        self.end_ids = ends

    def encode(self, text: str) -> List[int]:
        ids = list(self.tokenizer.encode(text, add_special_tokens=True).ids)
        if self.bos_id is not None and len(ids) >= 2 and ids[0] == ids[1] == self.bos_id:
            ids = ids[1:]  # the template wrote BOS itself and the post-processor added another
        return ids

    def token_bytes(self, token: int) -> bytes:
        if token in self.special:
            return b""
        piece = self.tokenizer.id_to_token(token)
        if piece is None:
            return b""
        if self.byte_level:
            return bytes(BYTE_DECODER.get(c, 0x3F) for c in piece)
        match = BYTE_FALLBACK.match(piece)
        if match:
            return bytes([int(match.group(1), 16)])
        return piece.replace("\u2581", " ").encode("utf-8")


def _read_json(path: Path) -> Dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _token_text(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("content") or "")
    return value if isinstance(value, str) else ""


# ------------------------------------------------------------------------- runner
class TensorRTRunner(Runner):
    """Generates text with a TensorRT decoder engine (optimum's ONNX export with KV cache).

    ``model_path`` must come from ``Bundle.artifact()`` (hash checked). ``engine_key`` is the
    compatibility key recorded in the variant's manifest metadata; loading refuses the engine
    when it does not match this device (``device_key`` overrides the detected one, for tests).
    The tokenizer files are read from ``tokenizer_dir`` (default: the engine's directory).
    """

    format = "tensorrt"

    def __init__(
        self,
        model_path,
        *,
        engine_key: Optional[Mapping[str, Any]] = None,
        device_key: Optional[Mapping[str, Any]] = None,
        tokenizer_dir: Optional[Path] = None,
        **kwargs,
    ):
        super().__init__(model_path, **kwargs)
        self.engine_key = dict(engine_key) if engine_key else None
        self.device_key = dict(device_key) if device_key else None
        self.tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir else self.model_path.parent

    # ------------------------------------------------------------- lifecycle
    def _load_impl(self) -> None:
        current = self.device_key or compatibility_key()
        check_engine_compatible(self.engine_key, current)  # before TensorRT sees the bytes
        self._tok = HfTokenizer(self.tokenizer_dir)
        trt = _import_tensorrt()
        cuda = _CudaRuntime.load()
        self._trt, self._cuda = trt, cuda
        self._logger = make_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        engine = self._runtime.deserialize_cuda_engine(self.model_path.read_bytes())
        if engine is None:
            detail = "; ".join(self._logger.errors) or "see the TensorRT log"
            raise ModelFileError(f"TensorRT could not deserialize {self.model_path.name}: {detail}")
        self._engine = engine
        self._context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if "input_ids" not in inputs or "logits" not in outputs:
            raise ModelFileError(
                f"{self.model_path.name}: expected a decoder engine with input 'input_ids' and output 'logits' "
                f"(optimum text-generation-with-past export); found inputs {inputs} and outputs {outputs}"
            )
        self._past = sorted((n for n in inputs if PAST_NAME.match(n)), key=lambda n: (int(PAST_NAME.match(n)[1]), n))
        if not self._past:
            raise ModelFileError(f"{self.model_path.name}: the engine has no KV-cache inputs (past_key_values.*)")
        self._present = {n: "present.{}.{}".format(*PAST_NAME.match(n).groups()) for n in self._past}
        missing = [p for p in self._present.values() if p not in outputs]
        if missing:
            raise ModelFileError(f"{self.model_path.name}: KV-cache outputs {missing} are missing")
        self._inputs = inputs
        self._dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        mask_max = engine.get_tensor_profile_shape("attention_mask", 0)[2] if "attention_mask" in inputs else None
        if mask_max is not None:
            self.n_ctx = min(self.n_ctx, int(mask_max[-1]))
        self._vocab = int(engine.get_tensor_shape("logits")[-1])
        self._stream = cuda.stream()
        self._buffers: List[int] = []
        self._token_buffers = {n: self._alloc(self.n_ctx * self._dtypes[n].itemsize)
                               for n in ("input_ids", "attention_mask", "position_ids") if n in inputs}
        self._chunk = min(PREFILL_CHUNK, self.n_ctx)
        self._logits_buffer = self._alloc(self._chunk * self._vocab * self._dtypes["logits"].itemsize)
        self._kv_shape: Dict[str, Tuple[int, int]] = {}
        self._kv = [{}, {}]  # ping-pong: past is read from one set, present written to the other
        for name in self._past:
            shape = engine.get_tensor_shape(name)  # [batch, heads, past, head_dim]
            heads, head_dim = int(shape[1]), int(shape[3])
            self._kv_shape[name] = (heads, head_dim)
            for side in self._kv:
                side[name] = self._alloc(heads * self.n_ctx * head_dim * self._dtypes[name].itemsize)
        self._pos = 0

    def _alloc(self, nbytes: int) -> int:
        pointer = self._cuda.malloc(nbytes)
        self._buffers.append(pointer)
        return pointer

    def _close_impl(self) -> None:
        for pointer in self._buffers:
            self._cuda.free(pointer)
        self._buffers = []
        self._cuda.destroy_stream(self._stream)
        self._context = self._engine = self._runtime = None

    # ----------------------------------------------------------------- tokens
    def _tokenize_impl(self, text: str) -> List[int]:
        return self._tok.encode(text)

    def _detokenize_impl(self, ids: Sequence[int]) -> bytes:
        return b"".join(self._tok.token_bytes(t) for t in ids)

    def _is_end_impl(self, token: int) -> bool:
        return token in self._tok.end_ids

    def _model_chat_template(self) -> Optional[str]:
        return self._tok.chat_template

    def _special_token_texts(self) -> tuple:
        return self._tok.bos_text, self._tok.eos_text

    # ------------------------------------------------------------- evaluation
    def _run(self, ids: Sequence[int], all_positions: bool) -> np.ndarray:
        """Evaluate ``ids`` after the cached ``self._pos`` tokens; return logits
        ([len(ids), vocab] or the last row)."""
        n, past = len(ids), self._pos
        if past + n > self.n_ctx:
            raise GenerationError(f"context full: {past} + {n} tokens exceed {self.n_ctx}")
        ctx, cuda, stream = self._context, self._cuda, self._stream
        feeds = {"input_ids": np.asarray([ids]),
                 "attention_mask": np.ones((1, past + n)),
                 "position_ids": np.arange(past, past + n)[None, :]}
        for name, pointer in self._token_buffers.items():
            array = feeds[name].astype(self._dtypes[name])
            ctx.set_input_shape(name, array.shape)
            cuda.to_device(pointer, array, stream)
            ctx.set_tensor_address(name, pointer)
        read, write = self._kv[0], self._kv[1]
        for name in self._past:
            heads, head_dim = self._kv_shape[name]
            ctx.set_input_shape(name, (1, heads, past, head_dim))
            ctx.set_tensor_address(name, read[name])
            ctx.set_tensor_address(self._present[name], write[name])
        ctx.set_tensor_address("logits", self._logits_buffer)
        if not ctx.execute_async_v3(stream):
            detail = "; ".join(self._logger.errors) or "see the TensorRT log"
            raise GenerationError(f"TensorRT execution failed at position {past}: {detail}")
        rows = n if all_positions else 1
        host = np.empty((rows, self._vocab), dtype=self._dtypes["logits"])
        offset = 0 if all_positions else (n - 1) * self._vocab * host.itemsize
        cuda.to_host(host, self._logits_buffer + offset, stream)
        cuda.synchronize(stream)
        self._kv.reverse()
        self._pos = past + n
        return host.astype(np.float32)

    def _evaluate(self, ids: Sequence[int], should_abort: Optional[Callable[[], bool]], all_positions: bool) -> np.ndarray:
        self._pos = 0
        rows = []
        for start in range(0, len(ids), self._chunk):
            if should_abort is not None and should_abort():
                raise _Aborted()
            rows.append(self._run(ids[start : start + self._chunk], all_positions))
        return np.concatenate(rows) if all_positions else rows[-1][0]

    def _prefill_impl(self, ids: List[int], should_abort: Callable[[], bool]) -> np.ndarray:
        return self._evaluate(ids, should_abort, all_positions=False)

    def _decode_impl(self, token: int, should_abort: Callable[[], bool]) -> np.ndarray:
        return self._run([token], all_positions=False)[0]

    def _logits_for_impl(self, ids: List[int]) -> np.ndarray:
        return self._evaluate(ids, None, all_positions=True)

    def _measure_prefill_impl(self, n_tokens: int) -> float:
        import time

        ids = (self._tok.encode("The year 1866 was signalised by a remarkable incident.") * n_tokens)[:n_tokens]
        start = time.perf_counter()
        self._evaluate(ids, None, all_positions=False)
        return (time.perf_counter() - start) * 1000
