"""What a GGUF model costs to run, from its header: per-token work and resident memory.

Costs are the x-axes of the roofline: the profiler measures time, and the fitted model
explains it as work / (efficiency x peak) for the work counted here. The memory estimate
follows llama.cpp's own layout:

- weights: the tensors' bytes (llama.cpp maps the file; every page is touched by decoding);
- KV cache: layers x cells x (K + V width) x bytes per element, per llama.cpp's cache;
  sliding-window layers hold only ``n_swa + n_ubatch`` cells unless the cache is full-size
  (llama.cpp makes it full-size with a unified cache, which edgert's runner uses);
- compute: the working set of one micro-batch (activations, attention scores, logits of the
  returned rows) — llama.cpp *reserves* far more (logits for the whole micro-batch) but never
  touches it when only the last rows' logits are asked for, so it does not become resident;
- overhead: runtime and vocabulary structures, a constant plus bytes per vocabulary entry.

The compute and overhead constants were fitted to the resident-set growth of SmolLM2-135M
and Gemma-3-270M at n_ctx 2048 (docs/reliability.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Sequence

from .base import MB, MemoryEstimate, ModelCosts, as_int
from .gguf import GGUFHeader, read_header

KV_BYTES_PER_VALUE = 2  # llama.cpp's default KV cache type is F16
N_UBATCH = 512  # edgert's llama.cpp runner: n_batch = n_ubatch = min(512, n_ctx)
N_OUTPUT_ROWS = 8  # llama.cpp's output buffer holds logits for n_seq_max rows (the runner's 8)
RUNTIME_OVERHEAD_BYTES = 12 * MB  # ggml contexts, token caches, allocator slack (fitted)
BYTES_PER_VOCAB_ENTRY = 130  # llama.cpp's vocabulary: strings, maps, token types (fitted)

# llama.cpp's sliding-window layer patterns by architecture (llama-model.cpp): every Nth layer
# attends to the whole context, the others to the window
SWA_PATTERNS = {"gemma3": 6, "gemma2": 2, "cohere2": 4, "gemma3n": 5}


def describe(path: Path) -> Dict[str, Any]:
    """The manifest fields a GGUF file contributes about itself."""
    return describe_header(read_header(path))


def describe_header(header: GGUFHeader) -> Dict[str, Any]:
    """``describe`` from a header already read (pack reads it once for several facts)."""
    return dict(format="gguf", quantization=header.quantization, parameter_count=header.parameter_count,
                context_length=header.context_length, architecture=header.architecture,
                chat_template=header.chat_template, tokenizer=header.tokenizer_info())


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


def costs(path: Path) -> ModelCosts:
    """Per-token work of a GGUF model file."""
    return costs_from_header(read_header(path))


def _per_layer(value, n_layer: int, default: int) -> Sequence[int]:
    """A hyperparameter that GGUF stores as one number or as one number per layer."""
    if isinstance(value, (list, tuple)) and len(value) == n_layer:
        return [as_int(v, default) for v in value]
    return [as_int(value, default)] * n_layer


def memory_from_header(header: GGUFHeader, n_ctx: int, n_seq: int = 1, *, kv_type_bytes: float = 2,
                       n_ubatch: int = N_UBATCH, swa_full: bool = True) -> MemoryEstimate:
    """``memory`` from a header already read."""
    weights = sum(t.n_bytes for t in header.tensors)
    n_layer = as_int(header.arch_key("block_count"))
    n_embd = as_int(header.arch_key("embedding_length"))
    n_ff = max(_per_layer(header.arch_key("feed_forward_length"), max(n_layer, 1), 0) or [0])
    n_head = max(_per_layer(header.arch_key("attention.head_count"), max(n_layer, 1), 0) or [0])
    heads_kv = _per_layer(header.arch_key("attention.head_count_kv"), n_layer, n_head)
    head_dim = n_embd // n_head if n_head else 0
    k_len = as_int(header.arch_key("attention.key_length"), head_dim)
    v_len = as_int(header.arch_key("attention.value_length"), head_dim)
    n_vocab = as_int(header.arch_key("vocab_size")) or header.array_lengths.get("tokenizer.ggml.tokens", 0)
    cells = n_ctx * max(n_seq, 1)
    n_ubatch = min(n_ubatch, cells)

    window = as_int(header.arch_key("attention.sliding_window"))
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



def memory(path: Path, n_ctx: int, n_seq: int = 1, *, kv_type_bytes: float = 2, n_ubatch: int = N_UBATCH,
           swa_full: bool = True) -> MemoryEstimate:
    """Resident memory of a GGUF model loaded for ``n_seq`` sequences of ``n_ctx`` tokens each."""
    return memory_from_header(read_header(path), n_ctx, n_seq, kv_type_bytes=kv_type_bytes, n_ubatch=n_ubatch,
                              swa_full=swa_full)
