"""Model file formats, one table: what each is called, its suffixes, and what it tells edgert.

Readers live one file per format (``gguf.py``, ``onnx.py``, ``safetensors.py``,
``tensorrt.py``); this registry says, per artifact format a bundle can hold, how to describe
a file for the manifest, what it costs per token, how much memory it needs and what its
runner takes from a bundle variant. The manifest, the memory check, ``open_runner`` and the
profiler ask it. A new format adds its reader and one entry here (and its runner).

safetensors has no entry: it is a conversion source, not a format a runner loads.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Dict, Optional, Union

from ..errors import ModelFileError
from . import gguf_costs, hf_config
from .base import MB, MemoryEstimate, ModelCosts, ModelFormat, no_runner_options
from .tensorrt import runner_options as tensorrt_runner_options

__all__ = ["MB", "MemoryEstimate", "ModelCosts", "ModelFormat", "REGISTRY", "get", "for_path", "costs_from_file",
           "memory_estimate", "describe", "runner_options", "suffixes"]

#: bytes per KV-cache element the exports keep (optimum's CPU ONNX export: fp32; TensorRT fp16 engines: fp16)
ONNX_KV_VALUE_BYTES = 4
TENSORRT_KV_VALUE_BYTES = 2

REGISTRY: Dict[str, ModelFormat] = {f.name: f for f in (
    ModelFormat("gguf", (".gguf",), describe=gguf_costs.describe, costs=gguf_costs.costs, memory=gguf_costs.memory,
                runner_options=no_runner_options),
    ModelFormat("onnx", (".onnx",), describe=partial(hf_config.describe, "onnx"),
                costs=partial(hf_config.costs, kv_value_bytes=ONNX_KV_VALUE_BYTES),
                memory=partial(hf_config.memory, "onnx", kv_type_bytes=ONNX_KV_VALUE_BYTES),
                runner_options=no_runner_options),
    ModelFormat("tensorrt", (".engine", ".plan"), describe=partial(hf_config.describe, "tensorrt"),
                costs=partial(hf_config.costs, kv_value_bytes=TENSORRT_KV_VALUE_BYTES),
                memory=partial(hf_config.memory, "tensorrt"), runner_options=tensorrt_runner_options),
)}


def suffixes() -> Dict[str, str]:
    """Format name -> the suffix a bundle stores its artifacts under."""
    return {name: fmt.suffix for name, fmt in REGISTRY.items()}


def get(name: str) -> ModelFormat:
    """The registry entry of a format name; ModelFileError for an unknown one."""
    if name not in REGISTRY:
        raise ModelFileError(f"expected a model format among {sorted(REGISTRY)}, found {name!r}")
    return REGISTRY[name]


def for_path(path: Union[str, Path]) -> ModelFormat:
    """The format of a model file by its suffix, or of an export directory by the files in it."""
    path = Path(path)
    suffix = path.suffix.lower()
    for fmt in REGISTRY.values():
        if suffix in fmt.suffixes:
            return fmt
    if path.is_dir():
        for fmt in REGISTRY.values():
            if any(any(path.glob(f"*{s}")) for s in fmt.suffixes):
                return fmt
    known = [s for fmt in REGISTRY.values() for s in fmt.suffixes]
    raise ModelFileError(f"{path}: expected a {', '.join(known[:-1])} or {known[-1]} model file, "
                         f"found {path.suffix or 'a directory'}")


def costs_from_file(path: Union[str, Path], fmt: Optional[str] = None) -> ModelCosts:
    """Per-token work of a model file (format from ``fmt`` or the path)."""
    return (get(fmt) if fmt else for_path(path)).costs(Path(path))


def memory_estimate(fmt: Optional[str], path: Union[str, Path], n_ctx: int, n_seq: int = 1,
                    **options: Any) -> MemoryEstimate:
    """Resident memory of a model loaded for ``n_seq`` sequences of ``n_ctx`` tokens (format from
    ``fmt``, e.g. a variant's, or from the path when None); the runtime's memory check."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model not found: expected a file or directory at {path}, found none")
    return (get(fmt) if fmt else for_path(path)).memory(path, n_ctx, n_seq, **options)


def describe(fmt: str, path: Union[str, Path]) -> Dict[str, Any]:
    """The manifest fields a model file contributes about itself."""
    return get(fmt).describe(Path(path))


def runner_options(variant: Any) -> Dict[str, Any]:
    """Keyword arguments the variant's runner takes from its manifest entry."""
    return get(variant.format).runner_options(variant)
