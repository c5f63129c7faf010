"""What every model format tells edgert about a file: the registry entry type and its answers.

A ``ModelFormat`` names the format and its file suffixes and answers four questions about a
model file: the manifest fields it contributes (``describe``), the per-token work the
roofline explains time with (``costs`` -> ``ModelCosts``), the resident memory it needs
(``memory`` -> ``MemoryEstimate``) and the keyword options its runner takes from a bundle
variant (``runner_options``). The entries themselves are in ``edgert.formats``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

MB = 1_000_000


@dataclass(frozen=True)
class ModelCosts:
    """Per-token work of one model variant (weights as stored, i.e. quantized)."""

    matmul_params: int  # weights multiplied per token (incl. the output projection)
    weight_bytes_per_step: int  # bytes of weights read by one decode step
    kv_bytes_per_token: int  # K+V cache bytes per context position (all layers)
    attn_flops_per_ctx_token: int  # QK^T + AV FLOPs per (new token x context position)
    n_layer: int
    output_params: int = 0  # the vocabulary projection: in prefill only the last position needs logits

    def decode_flops(self, context_len: float, batch: float) -> float:
        return batch * (2 * self.matmul_params + self.attn_flops_per_ctx_token * context_len)

    def decode_bytes(self, context_len: float, batch: float) -> float:
        return self.weight_bytes_per_step + batch * context_len * self.kv_bytes_per_token

    def prefill_linear_flops(self, n_tokens: float, logits: bool = True) -> float:
        """Weight FLOPs of a prompt: every layer for every token, the vocabulary projection once
        (``logits=False``: not at all, as in a micro-batch before a prompt's last)."""
        projection = min(n_tokens, 1) * self.output_params if logits else 0
        return 2 * (n_tokens * (self.matmul_params - self.output_params) + projection)

    def prefill_flops(self, n_tokens: float) -> float:
        # causal attention: token i attends to i positions -> n^2 / 2 pairs
        return self.prefill_linear_flops(n_tokens) + self.attn_flops_per_ctx_token * n_tokens * n_tokens / 2

    def prefill_bytes(self, n_tokens: float, ubatch: int = 512) -> float:
        # weights are streamed once per micro-batch; the new K/V are written once
        return self.weight_bytes_per_step * math.ceil(n_tokens / ubatch) + n_tokens * self.kv_bytes_per_token

    def to_dict(self) -> Dict[str, int]:
        return asdict(self)


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


@dataclass(frozen=True)
class ModelFormat:
    """One artifact format: its name, suffixes (the first is the one bundles write) and answers.

    ``memory(path, n_ctx, n_seq, **options)``: options are format-specific
    (``kv_type_bytes`` everywhere; GGUF also ``n_ubatch`` and ``swa_full``).
    ``runner_options(variant)``: keyword arguments for the runner from a bundle variant.
    """

    name: str
    suffixes: Tuple[str, ...]
    describe: Callable[[Path], Dict[str, Any]]
    costs: Callable[[Path], ModelCosts]
    memory: Callable[..., MemoryEstimate]
    runner_options: Callable[[Any], Dict[str, Any]]

    @property
    def suffix(self) -> str:
        return self.suffixes[0]


def no_runner_options(variant: Any) -> Dict[str, Any]:
    """Formats whose runner needs nothing beyond the artifact path."""
    return {}


def as_int(value: Any, default: int = 0) -> int:
    """A header or config value as an int: integers and integral floats; anything else
    (a bool, a string, a fraction, a missing key) is ``default``."""
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return default
