"""Shared pieces of every conversion: the source model, options, artifacts, the registry.

A converter turns a ``Source`` (a Hugging Face model directory, possibly imported from a
GGUF file) into one ``Artifact`` per quantization, written inside a staging directory; the
pipeline (``converters.pipeline``) runs the quality gate on each and only then moves the
passing ones into the bundle.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, List, Optional, Type

from edgert.errors import ConversionError, QualityGateError, UsageError
from edgert.progress import Progress

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@dataclass
class Source:
    """A model to convert, resolved to a Hugging Face directory (config.json + weights + tokenizer)."""

    path: Path  # what the user gave
    kind: str  # "hf_dir" | "gguf"
    hf_dir: Path  # the directory transformers / optimum load
    config: Dict[str, Any]
    trust_pickle: bool = False

    @property
    def architecture(self) -> str:
        archs = self.config.get("architectures") or [self.config.get("model_type", "unknown")]
        return str(archs[0])

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type", "unknown"))

    @property
    def name(self) -> str:
        stem = self.path.name
        for suffix in (".gguf",):
            if stem.endswith(suffix):
                stem = stem[: -len(suffix)]
        return stem


@dataclass
class ConvertOptions:
    quantizations: List[str]
    work_dir: Path  # staging directory on the bundle's filesystem
    block_size: int = 32  # 4-bit weight-only block size (ONNX MatMulNBits)
    imatrix: Optional[Path] = None  # llama.cpp importance matrix for GGUF quantization
    calibration: Optional[Path] = None  # static int8 calibration data (non-LLM ONNX)
    thresholds: Dict[str, float] = field(default_factory=dict)  # gate overrides (max_kld, min_top1, ...)
    threads: Optional[int] = None
    progress: Progress = None
    # TensorRT optimization profiles and builder
    max_batch: int = 8
    context_length: Optional[int] = None
    workspace_bytes: Optional[int] = None
    hardware_compatibility: Optional[str] = None


@dataclass
class Artifact:
    """One converted model, staged and not yet in the bundle."""

    format: str  # "gguf" | "onnx" | "tensorrt"
    quantization: str  # e.g. "Q4_K_M", "F16", "int8-dynamic", "int4-block32"
    path: Path  # main file (inside the staging directory)
    files: List[Path] = field(default_factory=list)  # further files it needs (ONNX external data, tokenizer)
    metadata: Dict[str, Any] = field(default_factory=dict)  # tool versions, options, engine compatibility


class Converter:
    """Base of the per-format converters; subclasses register themselves by ``target``."""

    target: ClassVar[str] = ""
    registry: ClassVar[Dict[str, Type["Converter"]]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.target:
            Converter.registry[cls.target] = cls

    def supported_quantizations(self) -> List[str]:
        raise NotImplementedError

    def supports(self, source: Source) -> Optional[str]:
        """None if the source can be converted, else the reason it cannot."""
        raise NotImplementedError

    def convert(self, source: Source, options: ConvertOptions) -> List[Artifact]:
        raise NotImplementedError

    def candidate(self, artifact: Artifact, threads: Optional[int] = None):
        """A ``quality.LogitsModel`` that evaluates the artifact (language models), with close()."""
        raise NotImplementedError

    def gate(self, source: Source, artifact: Artifact, reference, options: ConvertOptions):
        """Judge one artifact against the source; the default compares next-token
        distributions (language models). Converters of other networks override this."""
        from .quality import evaluate_lm, judge, lm_thresholds

        candidate = self.candidate(artifact, options.threads)
        try:
            metrics = evaluate_lm(reference, candidate, reference.windows())
        finally:
            close = getattr(candidate, "close", None)
            if close:
                close()
        return judge(metrics, lm_thresholds(artifact.quantization, options.thresholds))

    def estimated_output_bytes(self, source: Source, quantization: str) -> int:
        """Rough size of one output, for the disk-space pre-flight (default: fp16 weights)."""
        return 2 * source_parameter_count(source)

    def check_quantizations(self, quantizations: List[str]) -> List[str]:
        known = {q.lower(): q for q in self.supported_quantizations()}
        unknown = [q for q in quantizations if q.lower() not in known]
        if unknown:
            raise UsageError(
                f"--quant {', '.join(unknown)} is not available for --to {self.target}; "
                f"expected one of {', '.join(self.supported_quantizations())}"
            )
        return [known[q.lower()] for q in quantizations]


def converter_for(target: str) -> Converter:
    import importlib

    # each converter module registers itself on import; a missing optional engine skips it
    for module in ("gguf_convert", "onnx_convert", "tensorrt_convert"):
        try:
            importlib.import_module(f"{__package__}.{module}")
        except ImportError:
            pass
    if target not in Converter.registry:
        raise UsageError(f"--to {target!r}: expected one of {', '.join(sorted(Converter.registry))}")
    return Converter.registry[target]()


def read_config(hf_dir: Path) -> Dict[str, Any]:
    path = hf_dir / "config.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConversionError(f"{hf_dir}: not a Hugging Face model directory (config.json is missing)") from None
    except json.JSONDecodeError as exc:
        raise ConversionError(f"{path}: not valid JSON ({exc.msg})") from None


def resolve_source(path: Path, work_dir: Path, trust_pickle: bool = False, progress: Progress = None) -> Source:
    """A Hugging Face directory as is, or a GGUF file dequantized into one (in work_dir)."""
    path = Path(path)
    if not path.exists():
        raise ConversionError(f"source not found: {path}")
    if path.is_file() and path.suffix == ".gguf":
        hf_dir = import_gguf(path, work_dir / "source-hf", progress)
        return Source(path, "gguf", hf_dir, read_config(hf_dir), trust_pickle)
    if path.is_file():
        raise ConversionError(f"{path}: expected a Hugging Face model directory or a .gguf file, found a {path.suffix or 'plain'} file")
    config = read_config(path)
    weights = sorted(p.name for p in path.iterdir() if p.suffix == ".safetensors")
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if not weights and pickles and not trust_pickle:
        raise ConversionError(
            f"{path} has only pickle checkpoints ({', '.join(pickles)}), which can run code when loaded; "
            "pass --trust-pickle to load them with torch.load(weights_only=True)"
        )
    if not weights and not pickles:
        raise ConversionError(f"{path}: no weights found (expected *.safetensors)")
    from edgert.formats.safetensors import read_safetensors_header

    for name in weights:
        read_safetensors_header(path / name)  # a malformed file gets edgert's own clear error first
    if not weights:
        return Source(path, "hf_dir", _pickles_to_safetensors(path, pickles, work_dir / "source-hf"), config, trust_pickle)
    return Source(path, "hf_dir", path, config, trust_pickle)


def _pickles_to_safetensors(path: Path, pickles: List[str], out_dir: Path) -> Path:
    """Copy a trusted pickle checkpoint into a safetensors directory, loading tensors only."""
    import torch
    from safetensors.torch import save_file

    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    state: Dict[str, Any] = {}
    for name in pickles:
        try:
            loaded = torch.load(path / name, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ... for refused content
            raise ConversionError(f"{path / name}: refused by torch.load(weights_only=True): {exc}") from None
        if not isinstance(loaded, dict):
            raise ConversionError(f"{path / name}: expected a state dict of tensors, found {type(loaded).__name__}")
        state.update(loaded)
    # safetensors refuses shared storage; tied weights are written once each
    save_file({k: v.contiguous().clone() for k, v in state.items()}, str(out_dir / "model.safetensors"))
    for item in path.iterdir():
        if item.is_file() and item.suffix not in PICKLE_SUFFIXES:
            shutil.copy2(item, out_dir / item.name)
    return out_dir


def quiet_transformers() -> None:
    """transformers and huggingface_hub print progress bars and notices to stderr; edgert
    reports progress itself (the library never prints)."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def import_gguf(path: Path, out_dir: Path, progress: Progress = None) -> Path:
    """Dequantize a GGUF file into a Hugging Face directory with transformers (fp32)."""
    from edgert.formats.gguf import read_header

    read_header(path)  # a malformed file gets edgert's own clear error first
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise ConversionError("GGUF import unavailable: install edgert[convert]") from None
    quiet_transformers()
    if progress:
        progress("import GGUF (dequantize)", 0, 1)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    except (ValueError, KeyError, NotImplementedError) as exc:
        raise ConversionError(f"transformers cannot import {path.name}: {exc}") from None
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    # the slow tokenizer "vocab file" written for GGUF-loaded tokenizers is a copy of the GGUF itself
    vocab = tmp / "tokenizer.model"
    if vocab.exists() and (tmp / "tokenizer.json").exists() and vocab.read_bytes()[:4] == b"GGUF":
        vocab.unlink()
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    if progress:
        progress("import GGUF (dequantize)", 1, 1)
    return out_dir


def source_parameter_count(source: Source) -> int:
    """Parameters of the source from its safetensors headers (no tensor data is read)."""
    import struct

    total = 0
    for path in sorted(source.hf_dir.glob("*.safetensors")):
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        for name, info in header.items():
            if name != "__metadata__":
                n = 1
                for d in info["shape"]:
                    n *= d
                total += n
    return total
