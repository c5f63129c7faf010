"""How much memory a model will take, how much there is, and refusing what cannot fit.

For GGUF files the estimate is built from the header (llama.cpp's own layout):

- weights: the tensors' bytes (llama.cpp maps the file; every page is touched by decoding);
- KV cache: layers x cells x (K + V width) x bytes per element, per llama.cpp's cache;
  sliding-window layers hold only ``n_swa + n_ubatch`` cells unless the cache is full-size
  (llama.cpp makes it full-size with a unified cache, which edgert's runner uses);
- compute: the working set of one micro-batch (activations, attention scores, logits of the
  returned rows) — llama.cpp *reserves* far more (logits for the whole micro-batch) but never
  touches it when only the last rows' logits are asked for, so it does not become resident;
- overhead: runtime and vocabulary structures, a constant plus bytes per vocabulary entry.

The compute and overhead constants were fitted to the resident-set growth of SmolLM2-135M
and Gemma-3-270M at n_ctx 2048 (docs/reliability.md). ONNX and TensorRT files get a coarser
estimate from their size (estimated, not validated). Code that reads cgroup files takes a
filesystem root so tests can point it at a fake tree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

from .errors import InsufficientMemoryError, ModelFileError, UsageError
from .formats.gguf import GGUFHeader, read_header

MB = 1_000_000
DEFAULT_MARGIN_BYTES = 64 * MB
N_UBATCH = 512  # edgert's llama.cpp runner: n_batch = n_ubatch = min(512, n_ctx)
N_OUTPUT_ROWS = 8  # llama.cpp's output buffer holds logits for n_seq_max rows (the runner's 8)
RUNTIME_OVERHEAD_BYTES = 12 * MB  # ggml contexts, token caches, allocator slack (fitted)
BYTES_PER_VOCAB_ENTRY = 130  # llama.cpp's vocabulary: strings, maps, token types (fitted)
CGROUP_UNLIMITED = 1 << 60  # cgroup v1 writes a huge number for "no limit"

# engine formats estimated from file sizes: (compute as a fraction of weights, overhead)
FILE_SIZE_MODELS = {
    "onnx": (0.5, 64 * MB),  # ONNX Runtime: optimized-graph copies and arena; runtime libraries
    "tensorrt": (0.25, 256 * MB),  # host copy of the engine plus the CUDA context
}
SUFFIX_FORMATS = {".gguf": "gguf", ".onnx": "onnx", ".engine": "tensorrt", ".plan": "tensorrt"}


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a loaded model needs, by part. ``method`` says how they were obtained."""

    weights_bytes: int
    kv_cache_bytes: int
    compute_bytes: int
    overhead_bytes: int
    total_bytes: int
    label: str = ""
    n_ctx: Optional[int] = None
    method: str = "gguf header"

    @classmethod
    def of(cls, weights: int, kv: int, compute: int, overhead: int, **kwargs) -> "MemoryEstimate":
        parts = [int(weights), int(kv), int(compute), int(overhead)]
        return cls(*parts, sum(parts), **kwargs)

    def describe(self) -> str:
        """One line: the parts and the total in MB."""
        return (f"weights {self.weights_bytes / MB:.0f} MB + KV cache {self.kv_cache_bytes / MB:.0f} MB + "
                f"compute {self.compute_bytes / MB:.0f} MB + overhead {self.overhead_bytes / MB:.0f} MB "
                f"= {self.total_bytes / MB:.0f} MB")


def _int(value, default: int = 0) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return default


def _per_layer(value, n_layer: int, default: int) -> Sequence[int]:
    """A hyperparameter that GGUF stores as one number or as one number per layer."""
    if isinstance(value, (list, tuple)) and len(value) == n_layer:
        return [_int(v, default) for v in value]
    return [_int(value, default)] * n_layer


# llama.cpp's sliding-window layer patterns by architecture (llama-model.cpp): every Nth layer
# attends to the whole context, the others to the window
SWA_PATTERNS = {"gemma3": 6, "gemma2": 2, "cohere2": 4, "gemma3n": 5}


def _gguf_estimate(header: GGUFHeader, n_ctx: int, n_seq: int, kv_type_bytes: float, n_ubatch: int,
                   swa_full: bool) -> MemoryEstimate:
    weights = sum(t.n_bytes for t in header.tensors)
    n_layer = _int(header.arch_key("block_count"))
    n_embd = _int(header.arch_key("embedding_length"))
    n_ff = max(_per_layer(header.arch_key("feed_forward_length"), max(n_layer, 1), 0) or [0])
    n_head = max(_per_layer(header.arch_key("attention.head_count"), max(n_layer, 1), 0) or [0])
    heads_kv = _per_layer(header.arch_key("attention.head_count_kv"), n_layer, n_head)
    head_dim = n_embd // n_head if n_head else 0
    k_len = _int(header.arch_key("attention.key_length"), head_dim)
    v_len = _int(header.arch_key("attention.value_length"), head_dim)
    n_vocab = _int(header.arch_key("vocab_size")) or header.array_lengths.get("tokenizer.ggml.tokens", 0)
    cells = n_ctx * max(n_seq, 1)
    n_ubatch = min(n_ubatch, cells)

    window = _int(header.arch_key("attention.sliding_window"))
    pattern = SWA_PATTERNS.get(header.architecture, 0)
    kv = 0.0
    for layer, n_kv_head in enumerate(heads_kv):
        is_swa = bool(window and pattern and (layer + 1) % pattern != 0)
        layer_cells = min(cells, window * max(n_seq, 1) + n_ubatch) if is_swa and not swa_full else cells
        kv += layer_cells * n_kv_head * (k_len + v_len) * kv_type_bytes

    activations = n_ubatch * (4 * n_embd + 3 * n_ff) * 4
    attention = n_ubatch * min(cells, n_ubatch) * n_head * 4
    logits = max(N_OUTPUT_ROWS, n_seq) * n_vocab * 4
    overhead = RUNTIME_OVERHEAD_BYTES + BYTES_PER_VOCAB_ENTRY * n_vocab
    return MemoryEstimate.of(weights, kv, activations + attention + logits, overhead,
                             label=header.path.name, n_ctx=n_ctx, method="gguf header")


def _files_bytes(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _onnx_kv_bytes(path: Path, n_ctx: int, n_seq: int, kv_type_bytes: float) -> int:
    """KV cache from the Hugging Face config.json kept beside an exported ONNX model, if any."""
    import json

    directory = path if path.is_dir() else path.parent
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return 0
    n_layer = _int(config.get("num_hidden_layers"))
    n_head = _int(config.get("num_attention_heads"))
    n_head_kv = _int(config.get("num_key_value_heads"), n_head)
    head_dim = _int(config.get("head_dim")) or (_int(config.get("hidden_size")) // n_head if n_head else 0)
    return int(n_layer * n_ctx * max(n_seq, 1) * n_head_kv * head_dim * 2 * kv_type_bytes)


def estimate_memory(path_or_header: Union[str, os.PathLike, GGUFHeader], *, n_ctx: int, n_seq: int = 1,
                    kv_type_bytes: float = 2, n_ubatch: int = N_UBATCH, swa_full: bool = True) -> MemoryEstimate:
    """Resident memory of a model loaded for ``n_seq`` sequences of ``n_ctx`` tokens each.

    GGUF (a path or an already-read header): from the header, see the module docstring.
    ONNX (file or export directory) and TensorRT engines: from the file sizes, with the KV
    cache from a config.json beside an ONNX export (pass kv_type_bytes=4 for fp32 caches).
    """
    if not isinstance(n_ctx, int) or n_ctx < 1:
        raise UsageError(f"n_ctx must be a positive integer, found {n_ctx!r}")
    if isinstance(path_or_header, GGUFHeader):
        return _gguf_estimate(path_or_header, n_ctx, n_seq, kv_type_bytes, n_ubatch, swa_full)
    path = Path(path_or_header)
    if not path.exists():
        raise ModelFileError(f"model not found: expected a file or directory at {path}, found none")
    fmt = SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is None and path.is_dir():
        fmt = "onnx" if any(path.glob("*.onnx")) else "tensorrt" if any(path.glob("*.engine")) else None
    if fmt == "gguf":
        return _gguf_estimate(read_header(path), n_ctx, n_seq, kv_type_bytes, n_ubatch, swa_full)
    if fmt is None:
        raise ModelFileError(f"{path}: expected a .gguf, .onnx or TensorRT engine (.engine/.plan), found {path.suffix or 'a directory'}")
    weights = _files_bytes(path)
    compute_share, overhead = FILE_SIZE_MODELS[fmt]
    kv = _onnx_kv_bytes(path, n_ctx, n_seq, kv_type_bytes) if fmt == "onnx" else 0
    return MemoryEstimate.of(weights, kv, compute_share * weights, overhead, label=path.name, n_ctx=n_ctx,
                             method=f"{fmt} file size (estimated, not validated)")


# ------------------------------------------------------------------------ available memory
@dataclass(frozen=True)
class CgroupMemory:
    limit_bytes: int
    usage_bytes: int

    @property
    def available_bytes(self) -> int:
        return max(self.limit_bytes - self.usage_bytes, 0)


def _read_number(path: Path) -> Optional[int]:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return None if value >= CGROUP_UNLIMITED else value


def _own_cgroups(root: Path) -> dict:
    """Controller -> cgroup path of this process, from /proc/self/cgroup ("" = cgroup v2)."""
    out = {}
    try:
        lines = (root / "proc" / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return {"": "/", "memory": "/"}
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for controller in parts[1].split(",") if parts[1] else [""]:
            out[controller] = parts[2] or "/"
    return out


def _tightest(base: Path, cgroup: str, limit_name: str, usage_name: str) -> Optional[CgroupMemory]:
    """The smallest limit on the way from this process's cgroup up to the hierarchy's root."""
    best = None
    parts = [p for p in cgroup.strip("/").split("/") if p]
    for depth in range(len(parts), -1, -1):
        directory = base.joinpath(*parts[:depth])
        limit = _read_number(directory / limit_name)
        if limit is None:
            continue
        usage = _read_number(directory / usage_name) or 0
        found = CgroupMemory(limit, usage)
        if best is None or found.available_bytes < best.available_bytes:
            best = found
    return best


def cgroup_memory(root: Union[str, os.PathLike] = "/") -> Optional[CgroupMemory]:
    """This process's cgroup memory limit and usage (v2 ``memory.max``/``memory.current``, or v1
    ``memory.limit_in_bytes``/``memory.usage_in_bytes``); None when there is no limit."""
    root = Path(root)
    cgroups = _own_cgroups(root)
    found = []
    v2 = root / "sys" / "fs" / "cgroup"
    if "" in cgroups and (v2 / "cgroup.controllers").exists():
        found.append(_tightest(v2, cgroups[""], "memory.max", "memory.current"))
    if "memory" in cgroups:
        found.append(_tightest(v2 / "memory", cgroups["memory"], "memory.limit_in_bytes", "memory.usage_in_bytes"))
    found = [f for f in found if f is not None]
    return min(found, key=lambda f: f.available_bytes) if found else None


def available_memory_bytes(root: Union[str, os.PathLike] = "/") -> int:
    """Memory a new model can use now: the system's available memory, or less under a cgroup limit."""
    import psutil

    available = int(psutil.virtual_memory().available)
    limit = cgroup_memory(root)
    return min(available, limit.available_bytes) if limit is not None else available


def check_fits(estimate: MemoryEstimate, available: Optional[int] = None,
               margin_bytes: int = DEFAULT_MARGIN_BYTES) -> None:
    """Raise InsufficientMemoryError unless ``estimate`` plus ``margin_bytes`` fits in ``available``
    (default: ``available_memory_bytes()``)."""
    if available is None:
        available = available_memory_bytes()
    if estimate.total_bytes + margin_bytes <= available:
        return
    what = f"{estimate.label} at n_ctx {estimate.n_ctx}" if estimate.label else "the model"
    raise InsufficientMemoryError(
        f"not enough memory for {what}: needs about {estimate.total_bytes / MB:.0f} MB "
        f"(weights {estimate.weights_bytes / MB:.0f} MB, KV cache {estimate.kv_cache_bytes / MB:.0f} MB, "
        f"compute {estimate.compute_bytes / MB:.0f} MB, overhead {estimate.overhead_bytes / MB:.0f} MB) "
        f"plus a {margin_bytes / MB:.0f} MB margin, {available / MB:.0f} MB available; "
        f"use a smaller context or quantization"
    )
