"""How much memory a model will take, how much there is, and refusing what cannot fit.

The estimate comes from the model's format (``edgert.formats``): GGUF from its header in
llama.cpp's own layout (``formats/gguf_costs.py``), ONNX and TensorRT files from their
sizes (estimated, not validated). What is available is the system's available memory, or
less under a cgroup limit; code that reads cgroup files takes a filesystem root so tests
can point it at a fake tree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import psutil

from . import formats
from .errors import InsufficientMemoryError, UsageError
from .formats import MB, MemoryEstimate
from .formats.gguf import GGUFHeader
from .formats.gguf_costs import N_UBATCH, memory_from_header

DEFAULT_MARGIN_BYTES = 64 * MB
CGROUP_UNLIMITED = 1 << 60  # cgroup v1 writes a huge number for "no limit"


def estimate_memory(path_or_header: Union[str, os.PathLike, GGUFHeader], *, n_ctx: int, n_seq: int = 1,
                    kv_type_bytes: float = 2, n_ubatch: int = N_UBATCH, swa_full: bool = True) -> MemoryEstimate:
    """Resident memory of a model loaded for ``n_seq`` sequences of ``n_ctx`` tokens each.

    GGUF (a path or an already-read header): from the header. ONNX (file or export
    directory) and TensorRT engines: from the file sizes, with the KV cache from a
    config.json beside an ONNX export (pass kv_type_bytes=4 for fp32 caches).
    """
    if not isinstance(n_ctx, int) or n_ctx < 1:
        raise UsageError(f"n_ctx must be a positive integer, found {n_ctx!r}")
    if isinstance(path_or_header, GGUFHeader):
        return memory_from_header(path_or_header, n_ctx, n_seq, kv_type_bytes=kv_type_bytes, n_ubatch=n_ubatch,
                                  swa_full=swa_full)
    path = Path(path_or_header)
    options = dict(kv_type_bytes=kv_type_bytes)
    if path.exists() and formats.for_path(path).name == "gguf":
        options.update(n_ubatch=n_ubatch, swa_full=swa_full)
    return formats.memory_estimate(None, path, n_ctx, n_seq, **options)


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
