"""ONNX -> TensorRT engine, on the GPU that will run it.

Pieces that need no GPU are separate functions, tested on any machine:
``precision_plan`` (which builder API and flags a TensorRT version needs for fp32 / fp16 /
int8), ``prepare_onnx`` (opset, dynamic inputs -> optimization profile, external data, size
limits, Q/DQ and fp16 requirements), the compatibility key and its check (defined in
``edgert.runners.tensorrt``, which loading needs, and re-exported here), and
``tensorrt_unavailable_reason``. ``build_engine`` drives the real TensorRT builder API.

Two builder paths (TensorRT Developer Guide and Python API reference):

- flag-based ("weakly typed"; 8.5 on JetPack 5, 10.0-10.11 e.g. 10.3 on JetPack 6):
  ``BuilderFlag.FP16`` / ``BuilderFlag.INT8`` on the config; 8.x networks need the
  ``EXPLICIT_BATCH`` creation flag (deprecated and ignored in 10.x, removed in 11).
- strongly typed (10.12+, where weak typing is deprecated; the only mode in 11.x, where the
  ``STRONGLY_TYPED`` flag is accepted and ignored and FP16/INT8 builder flags are removed):
  precision comes from the ONNX model's tensor types and Q/DQ nodes; no precision flags.

INT8 is explicit quantization in both: the ONNX carries QuantizeLinear/DequantizeLinear
(e.g. onnxruntime ``quantize_static(..., quant_format=QuantFormat.QDQ)`` with symmetric int8),
never TensorRT's implicit calibration (removed in 11).

This file is over 400 lines because it is one target, like ``gguf_writer.py``: the version
tables, the ONNX checks, the builder and the converter describe one engine format.
"""

from __future__ import annotations

import importlib.util
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from edgert.devices.nvidia import load_nvml
from edgert.errors import BackendUnavailableError, ConversionError
from edgert.fileio import atomic_write_bytes
from edgert.formats.tensorrt import (  # noqa: F401  (re-exported: the build side records the key)
    EngineMismatchError,
    HARDWARE_COMPATIBILITY,
    check_engine_compatible,
    compatibility_key,
    installed_tensorrt_version,
    parse_version,
)
from edgert.runners.tensorrt import make_logger

from .base import Artifact, Converter, ConvertOptions
from .onnx_convert import export_onnx
from .quality import RunnerLogits, Thresholds
from .source import Source

# ------------------------------------------------------------------------ tables
#: first TensorRT version built strongly typed: weak typing is deprecated from 10.12
#: (TensorRT 10.12 release notes; "Strong Typing vs Weak Typing" in the Developer Guide).
STRONGLY_TYPED_SINCE = (10, 12)
#: EXPLICIT_BATCH is required for ONNX on 8.x, ignored in 10.x, gone in 11.x
#: (Python API, NetworkDefinitionCreationFlag).
EXPLICIT_BATCH_BEFORE = (10, 0)

@dataclass(frozen=True)
class TensorRTQuantization:
    """One engine precision: how it is built, how big it is, how closely it must match."""

    name: str
    builder_flags: Tuple[str, ...]  # BuilderFlag members on the flag-based path
    requires_qdq: bool  # the ONNX must carry Q/DQ nodes
    requires_fp16_onnx: bool  # the ONNX must be fp16-typed on the strongly typed path
    weight_bytes_factor: float  # engine weight bytes per fp32 ONNX weight byte
    gate: Thresholds  # quality-gate limits (as ONNX Runtime's fp32/fp16; int8 as the 4-bit limits)


#: the TensorRT target's quantizations. INT8 on the flag-based path keeps FP16 on so layers
#: outside Q/DQ pairs may run in fp16 (trtexec --int8 --fp16).
#: (Developer Guide "Working with Quantized Types" / "Explicit Quantization": use Q/DQ with
#: strong typing, precision flags not required; TensorRT 11 migration guide: BuilderFlag.FP16
#: -> strong typing, BuilderFlag.INT8 -> explicit quantization with Q/DQ nodes.)
QUANTIZATIONS: Dict[str, TensorRTQuantization] = {
    q.name: q
    for q in (
        TensorRTQuantization("fp32", (), False, False, 1.0, Thresholds(0.0005, 0.99, 0.5)),
        TensorRTQuantization("fp16", ("FP16",), False, True, 0.5, Thresholds(0.002, 0.98, 1.0)),
        TensorRTQuantization("int8", ("INT8", "FP16"), True, False, 0.25, Thresholds(0.60, 0.60, 25.0)),
    )
}

#: highest ONNX opset the bundled ONNX parser reads, by TensorRT version (support matrices /
#: onnx-tensorrt operators.md per release; 11.x "ONNX Opset Guide"). Lowest supported: 9.
MAX_OPSET: Sequence[Tuple[Tuple[int, ...], int]] = (
    ((8, 5), 17), ((8, 6), 17), ((10, 0), 20), ((10, 9), 22), ((10, 13), 24), ((11, 5), 25),
)
MIN_OPSET = 9
#: protobuf's 2 GiB message limit: bigger models must keep weights as ONNX external data.
PROTOBUF_LIMIT_BYTES = 2**31
#: largest element count of one tensor before "large tensor" support (TensorRT 10.10 release notes).
MAX_TENSOR_ELEMENTS = 2**31 - 1
LARGE_TENSORS_SINCE = (10, 10)
#: share of device memory the engine's weights may take (activations, KV cache, the OS on Jetson).
WEIGHT_MEMORY_SHARE = 0.8

# optimization profile defaults (batch 1..8, sequence 1..context)
DEFAULT_MAX_BATCH = 8
DEFAULT_CONTEXT = 2048

#: ONNX dim_param names -> the kind of dimension (optimum's exporter names, e.g.
#: "batch_size", "sequence_length", "past_sequence_length", "past_sequence_length + 1").
DIM_KINDS: Sequence[Tuple[str, Callable[[str], bool]]] = (
    ("total", lambda n: "past" in n and "+" in n or "total" in n),
    ("past", lambda n: "past" in n),
    ("batch", lambda n: "batch" in n),
    ("sequence", lambda n: "seq" in n or "length" in n or "token" in n),
)

ENGINE_NAME = "model.engine"
TIMING_CACHE_NAME = "tensorrt.timing-cache"
#: files copied beside each engine for the runner (tokenizer and generation settings)
BESIDE_ENGINE = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                 "generation_config.json", "config.json")
ONNX_OPTIMUM_TASK = "text-generation-with-past"
FP32_BYTES = 4


class TensorRTUnavailable(ConversionError, BackendUnavailableError):
    """No NVIDIA GPU or no TensorRT package: nothing can be built here."""


# ----------------------------------------------------------------- availability
def tensorrt_unavailable_reason(
    root: Path = Path("/"),
    which: Optional[Callable[[str], Optional[str]]] = None,
    find_spec: Optional[Callable[[str], Any]] = None,
) -> Optional[str]:
    """None if an NVIDIA GPU and the tensorrt package are present, else what is missing."""
    root = Path(root)
    which = which or shutil.which
    find_spec = find_spec or importlib.util.find_spec
    gpu = bool(which("nvidia-smi")) or (root / "dev/nvidia0").exists() or (root / "etc/nv_tegra_release").exists()
    package = find_spec("tensorrt") is not None
    if gpu and package:
        return None
    no_gpu = "no NVIDIA GPU found (nvidia-smi / /dev/nvidia0 absent)"
    no_package = "the tensorrt package is not installed"
    if not gpu and not package:
        return f"TensorRT unavailable: {no_gpu} and {no_package}: install edgert[gpu] on a machine with an NVIDIA GPU"
    if not gpu:
        return (f"TensorRT unavailable: {no_gpu}; engines are built on the GPU that will run them: "
                "run edgert convert --to tensorrt on that device")
    return f"TensorRT unavailable: {no_package}: install edgert[gpu] (on Jetson: JetPack's python3-libnvinfer)"


# --------------------------------------------------------------- precision plan
@dataclass(frozen=True)
class PrecisionPlan:
    """How to build one quantization with one TensorRT version."""

    tensorrt_version: Tuple[int, ...]
    quantization: str
    api: str  # "flags" | "strongly_typed"
    network_flags: Tuple[str, ...]  # NetworkDefinitionCreationFlag members
    builder_flags: Tuple[str, ...]  # BuilderFlag members
    requires_qdq: bool  # the ONNX must carry QuantizeLinear/DequantizeLinear
    requires_fp16_onnx: bool  # the ONNX must be fp16-typed (strongly typed fp16)

    def to_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        data["tensorrt_version"] = ".".join(map(str, self.tensorrt_version))
        return data


def precision_plan(tensorrt_version, quantization: str) -> PrecisionPlan:
    """The builder API path, flags and ONNX requirements for a TensorRT version and quantization."""
    version = parse_version(tensorrt_version) if isinstance(tensorrt_version, str) else tuple(tensorrt_version)
    if quantization not in QUANTIZATIONS:
        raise ConversionError(f"TensorRT quantization {quantization!r}: expected one of {', '.join(QUANTIZATIONS)}")
    if version < (8, 5):
        raise ConversionError(f"TensorRT {'.'.join(map(str, version))} is too old: edgert builds with 8.5 or newer")
    spec = QUANTIZATIONS[quantization]
    flags, qdq, fp16_onnx = spec.builder_flags, spec.requires_qdq, spec.requires_fp16_onnx
    if version >= STRONGLY_TYPED_SINCE:
        return PrecisionPlan(version, quantization, "strongly_typed", ("STRONGLY_TYPED",), (), qdq, fp16_onnx)
    network = ("EXPLICIT_BATCH",) if version < EXPLICIT_BATCH_BEFORE else ()
    return PrecisionPlan(version, quantization, "flags", network, flags, qdq, False)


# ------------------------------------------------------------- ONNX preparation
@dataclass
class ProfileOptions:
    """Ranges of the optimization profile's dynamic dimensions."""

    max_batch: int = DEFAULT_MAX_BATCH
    context: int = DEFAULT_CONTEXT

    def check(self) -> None:
        if self.max_batch < 1 or self.context < 2:
            raise ConversionError(f"profile needs max_batch >= 1 and context >= 2, found {self.max_batch}, {self.context}")


def dim_kind(name: str) -> Optional[str]:
    name = name.lower()
    return next((kind for kind, test in DIM_KINDS if test(name)), None)


def profile_shapes(inputs: Mapping[str, Sequence[Any]], options: ProfileOptions) -> Dict[str, Tuple[Tuple[int, ...], ...]]:
    """min/opt/max shapes of every input with a dynamic dimension. ``inputs`` maps names to
    dims: ints for static dims, strings (ONNX dim_param) or None for dynamic ones."""
    options.check()
    has_past = any(dim_kind(d) == "past" for dims in inputs.values() for d in dims if isinstance(d, str))
    seq_opt = 1 if has_past else min(options.context, 128)  # decoders spend their time decoding
    past_opt = options.context // 2
    ranges = {
        "batch": (1, 1, options.max_batch),
        "sequence": (1, seq_opt, options.context),
        "past": (0, past_opt, options.context - 1),
        "total": (1, past_opt + seq_opt, options.context),
    }
    shapes = {}
    for name, dims in inputs.items():
        if all(isinstance(d, int) and d > 0 for d in dims):
            continue
        low, opt, high = [], [], []
        for axis, d in enumerate(dims):
            if isinstance(d, int) and d > 0:
                low.append(d), opt.append(d), high.append(d)
                continue
            kind = dim_kind(d) if isinstance(d, str) else None
            if kind is None:
                raise ConversionError(
                    f"input {name!r} has a dynamic dimension {axis} ({d!r}) edgert cannot size; expected a "
                    "batch, sequence or past-sequence dimension name, or a fixed size (re-export with static shapes)"
                )
            a, b, c = ranges[kind]
            low.append(a), opt.append(b), high.append(c)
        shapes[name] = (tuple(low), tuple(opt), tuple(high))
    return shapes


@dataclass
class PreparedOnnx:
    """An ONNX model checked for one precision plan, with its optimization profile."""

    path: Path
    opset: int
    profile: Dict[str, Tuple[Tuple[int, ...], ...]]
    weight_bytes: int
    external_data: List[str] = field(default_factory=list)
    qdq_nodes: int = 0
    converted_to_fp16: bool = False


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ConversionError("ONNX preparation unavailable: install edgert[convert]") from None
    return onnx


def max_opset(version: Tuple[int, ...]) -> int:
    best = MAX_OPSET[0][1]
    for since, opset in MAX_OPSET:
        if version >= since:
            best = opset
    return best


def _initializer_bytes(tensor, onnx) -> int:
    for entry in tensor.external_data:
        if entry.key == "length":
            return int(entry.value)
    if tensor.raw_data:
        return len(tensor.raw_data)
    n = 1
    for d in tensor.dims:
        n *= d
    return n * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def _check_qdq_symmetric(model, onnx) -> None:
    """TensorRT reads Q/DQ as symmetric int8 (zero point 0): refuse uint8 / non-zero points."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        data = inits.get(node.input[0])
        if node.op_type == "DequantizeLinear" and data is not None and data.data_type == onnx.TensorProto.INT32:
            raise ConversionError(
                f"Q/DQ node {node.name or node.input[0]!r} dequantizes an int32 tensor (a quantized bias); "
                "TensorRT's explicit quantization takes int8 only: quantize with extra_options={'QuantizeBias': False}"
            )
        if len(node.input) < 3:
            continue
        point = inits.get(node.input[2])
        if point is None or point.data_location == onnx.TensorProto.EXTERNAL:
            continue
        if point.data_type != onnx.TensorProto.INT8 or numpy_helper.to_array(point).any():
            raise ConversionError(
                f"Q/DQ node {node.name or node.input[0]!r} has a {onnx.TensorProto.DataType.Name(point.data_type)} "
                "zero point that is not 0; TensorRT needs symmetric int8: quantize with activation_type=QInt8, "
                "weight_type=QInt8 and extra_options={'ActivationSymmetric': True, 'WeightSymmetric': True}"
            )


def _has_fp16_weights(model, onnx) -> bool:
    floats = [t.data_type for t in model.graph.initializer if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]
    return bool(floats) and floats.count(onnx.TensorProto.FLOAT16) >= floats.count(onnx.TensorProto.FLOAT)


def prepare_onnx(
    path: Path,
    plan: PrecisionPlan,
    options: ProfileOptions,
    work_dir: Optional[Path] = None,
    device_memory_bytes: Optional[int] = None,
) -> PreparedOnnx:
    """Check an ONNX model against a plan and the engine limits; derive the optimization profile.
    A strongly typed fp16 plan on an fp32 model writes an fp16 copy into ``work_dir``."""
    onnx = _onnx()
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"ONNX model not found: {path}")
    size = path.stat().st_size
    if size >= PROTOBUF_LIMIT_BYTES:
        raise ConversionError(
            f"{path.name} is {size / 2**30:.1f} GiB in one file, over protobuf's 2 GiB limit: "
            "export it with external data (weights in separate files)"
        )
    model = onnx.load(str(path), load_external_data=False)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    highest = max_opset(plan.tensorrt_version)
    version = ".".join(map(str, plan.tensorrt_version))
    if not MIN_OPSET <= opset <= highest:
        raise ConversionError(
            f"{path.name} uses ONNX opset {opset}; TensorRT {version}'s parser reads opsets {MIN_OPSET}-{highest}: "
            f"re-export with opset <= {highest}"
        )
    external = sorted({e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"})
    missing = [name for name in external if not (path.parent / name).is_file()]
    if missing:
        raise ConversionError(f"{path.name} needs external data files that are not beside it: {', '.join(missing)}")
    weight_bytes = sum(_initializer_bytes(t, onnx) for t in model.graph.initializer)
    if plan.tensorrt_version < LARGE_TENSORS_SINCE:
        for tensor in model.graph.initializer:
            n = 1
            for d in tensor.dims:
                n *= d
            if n > MAX_TENSOR_ELEMENTS:
                raise ConversionError(
                    f"tensor {tensor.name!r} has {n} elements; TensorRT {version} handles at most {MAX_TENSOR_ELEMENTS} "
                    "per tensor (large tensors need TensorRT 10.10+)"
                )
    if device_memory_bytes:
        built = int(weight_bytes * QUANTIZATIONS[plan.quantization].weight_bytes_factor)
        budget = int(device_memory_bytes * WEIGHT_MEMORY_SHARE)
        if built > budget:
            raise ConversionError(
                f"the {plan.quantization} engine needs about {built / 2**30:.2f} GiB of weights; this GPU has "
                f"{device_memory_bytes / 2**30:.2f} GiB ({WEIGHT_MEMORY_SHARE:.0%} usable for weights): "
                "choose a smaller quantization or model"
            )
    qdq = sum(1 for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear"))
    if plan.requires_qdq and not qdq:
        raise ConversionError(
            f"int8 needs an ONNX model with QuantizeLinear/DequantizeLinear nodes; {path.name} has none: "
            "quantize it first (onnxruntime quantize_static with quant_format=QuantFormat.QDQ, symmetric int8)"
        )
    if qdq:
        _check_qdq_symmetric(model, onnx)
    init_names = {t.name for t in model.graph.initializer}
    inputs = {}
    for value in model.graph.input:
        if value.name in init_names:
            continue
        dims = []
        for d in value.type.tensor_type.shape.dim:
            dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
        inputs[value.name] = dims
    profile = profile_shapes(inputs, options)
    prepared = PreparedOnnx(path, opset, profile, weight_bytes, external, qdq)
    if plan.requires_fp16_onnx and not _has_fp16_weights(model, onnx):
        prepared.path = _to_fp16(path, work_dir or path.parent, size_hint=size + weight_bytes)
        prepared.converted_to_fp16 = True
    return prepared


def _to_fp16(path: Path, work_dir: Path, size_hint: int) -> Path:
    """An fp16-typed copy of the model (inputs and outputs kept fp32) for strongly typed fp16."""
    onnx = _onnx()
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
    out_dir = Path(work_dir) / "onnx-fp16"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "model.onnx"
    large = size_hint >= PROTOBUF_LIMIT_BYTES // 2
    onnx.save_model(model, str(out), save_as_external_data=large, location="model.onnx.data" if large else None)
    return out


# ------------------------------------------------------------------- builder
def build_engine(
    trt: Any,
    prepared: PreparedOnnx,
    plan: PrecisionPlan,
    timing_cache: Optional[Path] = None,
    workspace_bytes: Optional[int] = None,
    hardware_compatibility: str = "none",
) -> bytes:
    """Parse the ONNX model and build a serialized engine with the real TensorRT API.
    The timing cache is read from and written back to ``timing_cache`` when given."""
    logger = make_logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    for name in plan.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(prepared.path)):  # resolves external data beside the file
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ConversionError(f"TensorRT's ONNX parser rejected {prepared.path.name}: {'; '.join(errors) or 'no detail'}")
    config = builder.create_builder_config()
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    if workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if prepared.profile:
        profile = builder.create_optimization_profile()
        for name, (low, opt, high) in prepared.profile.items():
            profile.set_shape(name, low, opt, high)
        config.add_optimization_profile(profile)
    if hardware_compatibility != "none":
        member = HARDWARE_COMPATIBILITY[hardware_compatibility][0]
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, member)
    cache_bytes = timing_cache.read_bytes() if timing_cache is not None and timing_cache.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ConversionError(f"TensorRT could not build the {plan.quantization} engine: "
                              f"{'; '.join(logger.errors) or 'see the TensorRT log'}")
    if timing_cache is not None:
        atomic_write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def _import_tensorrt():
    try:
        import tensorrt
    except ImportError:
        raise TensorRTUnavailable(tensorrt_unavailable_reason() or "TensorRT unavailable: install edgert[gpu]") from None
    return tensorrt


# ---------------------------------------------------------------- converter
def find_onnx(path: Path) -> Optional[Path]:
    """An ONNX file given directly, or the one model in a directory (model.onnx preferred)."""
    path = Path(path)
    if path.is_file() and path.suffix == ".onnx":
        return path
    if path.is_dir():
        if (path / "model.onnx").is_file():
            return path / "model.onnx"
        found = sorted(path.glob("*.onnx"))
        if len(found) == 1:
            return found[0]
    return None


class TensorRTConverter(Converter):
    """ONNX (given, or exported with optimum) -> one TensorRT engine per quantization."""

    target = "tensorrt"

    def __init__(self, root: Path = Path("/")):
        self.root = Path(root)

    def supported_quantizations(self) -> List[str]:
        return list(QUANTIZATIONS)

    def gate_thresholds(self, quantization: str) -> Thresholds:
        return QUANTIZATIONS[quantization].gate

    def supports(self, source: Source) -> Optional[str]:
        reason = tensorrt_unavailable_reason(self.root)
        if reason:
            return reason
        if find_onnx(source.hf_dir) is None and importlib.util.find_spec("optimum") is None:
            return "ONNX export unavailable (the source is not ONNX): install edgert[convert]"
        return None

    def estimated_output_bytes(self, source: Source, quantization: str) -> int:
        factor = QUANTIZATIONS[quantization.lower()].weight_bytes_factor
        return int(FP32_BYTES * factor * source.parameter_count)

    def convert(self, source: Source, options: ConvertOptions) -> List[Artifact]:
        quantizations = self.check_quantizations(options.quantizations)
        reason = tensorrt_unavailable_reason(self.root)
        if reason:
            raise TensorRTUnavailable(reason)  # before anything is written
        trt = _import_tensorrt()
        key = compatibility_key(
            tensorrt_version=trt.__version__, root=self.root,
            hardware_compatibility=options.hardware_compatibility or "none",
        )
        level = key.get("hardware_compatibility", "none")
        if level == "ampere_plus" and key.get("l4t"):
            raise ConversionError("hardware compatibility (ampere_plus) is not supported on JetPack; build without it")
        profile = ProfileOptions(
            max_batch=options.max_batch or DEFAULT_MAX_BATCH,
            context=options.context_length or min(
                int(source.config.get("max_position_embeddings") or DEFAULT_CONTEXT), DEFAULT_CONTEXT),
        )
        plans = {q: precision_plan(trt.__version__, q) for q in quantizations}
        onnx_path = self._source_onnx(source, options)
        memory = _device_memory_bytes()
        prepared = {q: prepare_onnx(onnx_path, plans[q], profile, options.work_dir, memory) for q in quantizations}
        cache = Path(options.work_dir) / TIMING_CACHE_NAME
        artifacts = []
        for i, q in enumerate(quantizations):
            if options.progress:
                options.progress(f"TensorRT build {q}", i, len(quantizations))
            started = time.perf_counter()
            engine = build_engine(trt, prepared[q], plans[q], cache, options.workspace_bytes, level)
            out_dir = Path(options.work_dir) / f"tensorrt-{q}"
            out_dir.mkdir(parents=True, exist_ok=True)
            path = out_dir / ENGINE_NAME
            atomic_write_bytes(path, engine)
            files = []
            for name in BESIDE_ENGINE:
                src = Path(source.hf_dir if Path(source.hf_dir).is_dir() else Path(source.hf_dir).parent) / name
                if src.is_file():
                    shutil.copyfile(src, out_dir / name)
                    files.append(out_dir / name)
            artifacts.append(Artifact(
                format="tensorrt", quantization=q, path=path, files=files,
                metadata={
                    "engine": key,
                    "tensorrt_build": {
                        "plan": plans[q].to_dict(),
                        "onnx_opset": prepared[q].opset,
                        "onnx_converted_to_fp16": prepared[q].converted_to_fp16,
                        "qdq_nodes": prepared[q].qdq_nodes,
                        "profile": {n: [list(s) for s in v] for n, v in prepared[q].profile.items()},
                        "build_s": round(time.perf_counter() - started, 2),
                        "timing_cache": TIMING_CACHE_NAME,
                    },
                },
            ))
        if options.progress:
            options.progress("TensorRT build", len(quantizations), len(quantizations))
        return artifacts

    def _source_onnx(self, source: Source, options: ConvertOptions) -> Path:
        found = find_onnx(source.hf_dir)
        if found is not None:
            return found
        return export_onnx(source, ONNX_OPTIMUM_TASK, Path(options.work_dir) / "onnx-export", options.progress)

    def candidate(self, artifact: Artifact, threads: Optional[int] = None) -> RunnerLogits:
        """A built engine evaluated by the TensorRT runner (all-position logits) for the quality gate."""
        return RunnerLogits("tensorrt", artifact.path, engine_key=artifact.metadata.get("engine"), n_ctx=1024)


def _device_memory_bytes() -> Optional[int]:
    """GPU memory from NVML (Jetson: none, so the limit check is skipped there)."""
    try:
        nvml = load_nvml()
        return int(nvml.nvmlDeviceGetMemoryInfo(nvml.nvmlDeviceGetHandleByIndex(0)).total)
    except Exception:  # memory is advisory: a failing query only skips the check
        return None
