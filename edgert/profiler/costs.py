"""FLOPs and bytes moved by a transformer decoder, from its GGUF header.

These are the x-axes of the roofline: the profiler measures time, and the fitted model
explains time as work / (efficiency x peak) for the work counted here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict

from ..formats.gguf import GGUFHeader, read_header

KV_BYTES_PER_VALUE = 2  # llama.cpp's default KV cache type is F16


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


def costs_from_header(header: GGUFHeader) -> ModelCosts:
    arch = header.architecture
    n_layer = int(header.arch_key("block_count", 0) or 0)
    n_embd = int(header.arch_key("embedding_length", 0) or 0)
    n_head = int(header.arch_key("attention.head_count", 0) or 0)
    n_head_kv = int(header.arch_key("attention.head_count_kv", n_head) or n_head)
    head_dim = int(header.arch_key("attention.key_length", 0) or (n_embd // n_head if n_head else 0))
    names = {t.name for t in header.tensors}
    tied_output = "output.weight" not in names
    output_name = "token_embd.weight" if tied_output else "output.weight"
    output_params = 0
    matmul_params = 0
    weight_bytes = 0
    for tensor in header.tensors:
        if len(tensor.shape) < 2:
            weight_bytes += tensor.n_bytes  # norms and biases: read, barely multiplied
            continue
        if tensor.name == "token_embd.weight" and not tied_output:
            continue  # a lookup reads one row per token, not the matrix
        matmul_params += tensor.n_elements
        weight_bytes += tensor.n_bytes
        if tensor.name == output_name:
            output_params = tensor.n_elements
    if not (n_layer and n_head and head_dim):
        raise ValueError(f"{header.path}: {arch} header lacks block_count / head counts needed for costs")
    return ModelCosts(
        matmul_params=matmul_params,
        weight_bytes_per_step=weight_bytes,
        kv_bytes_per_token=2 * n_layer * n_head_kv * head_dim * KV_BYTES_PER_VALUE,
        attn_flops_per_ctx_token=4 * n_layer * n_head * head_dim,
        n_layer=n_layer,
        output_params=output_params,
    )


def costs_from_file(path: Path) -> ModelCosts:
    return costs_from_header(read_header(path))
