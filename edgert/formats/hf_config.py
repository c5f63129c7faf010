"""Costs, memory and manifest fields of a Hugging Face export (ONNX, TensorRT) from its side files.

An exported graph does not say what architecture it computes, but the export keeps the
model's ``config.json`` beside it (optimum writes it; the converters copy it next to each
engine). The transformer's shape comes from there: layers, heads, widths, vocabulary.
The bytes a decode step reads are the exported weights' bytes, less the embedding table
when the output projection is not tied to it (a lookup reads one row per token).

Memory is estimated from file sizes (estimated, not validated against a measured process):
compute as a share of the weights plus a per-format overhead, and the KV cache from the
config at the given element size.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional

from ..errors import ModelFileError
from .base import MB, MemoryEstimate, ModelCosts, as_int

CONFIG_FILE = "config.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
#: side files that hold no weights (tokenizer, configs, templates)
SIDE_SUFFIXES = (".json", ".jinja", ".txt", ".model", ".md")
#: transformers model types whose MLP has two matrices (up, down) instead of three (gate, up, down)
UNGATED_MLP = ("gpt2", "gpt_neox", "gptj", "opt", "bloom", "falcon", "phi", "starcoder2", "gpt_bigcode")

# engine formats estimated from file sizes: (compute as a fraction of weights, overhead)
FILE_SIZE_MODELS = {
    "onnx": (0.5, 64 * MB),  # ONNX Runtime: optimized-graph copies and arena; runtime libraries
    "tensorrt": (0.25, 256 * MB),  # host copy of the engine plus the CUDA context
}


def _directory(path: Path) -> Path:
    return path if path.is_dir() else path.parent


def read_config(path: Path, required: bool = False) -> Dict[str, Any]:
    """config.json beside a model file (or inside an export directory); {} when absent and not required."""
    file = _directory(Path(path)) / CONFIG_FILE
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except OSError:
        if required:
            raise ModelFileError(f"{file}: expected the export's config.json beside the model, found none") from None
        return {}
    except ValueError as exc:
        if required:
            raise ModelFileError(f"{file}: expected JSON, found invalid text ({exc})") from None
        return {}
    return data if isinstance(data, dict) else {}


def _shape(config: Dict[str, Any]) -> Dict[str, int]:
    n_head = as_int(config.get("num_attention_heads"))
    hidden = as_int(config.get("hidden_size"))
    return dict(
        n_layer=as_int(config.get("num_hidden_layers")), n_head=n_head, hidden=hidden,
        n_head_kv=as_int(config.get("num_key_value_heads"), n_head),
        head_dim=as_int(config.get("head_dim")) or (hidden // n_head if n_head else 0),
        n_ff=as_int(config.get("intermediate_size")) or 4 * hidden, n_vocab=as_int(config.get("vocab_size")),
    )


def kv_bytes(config: Dict[str, Any], n_ctx: int, n_seq: int, kv_type_bytes: float) -> int:
    """KV cache bytes for ``n_seq`` sequences of ``n_ctx`` tokens (0 when the config lacks the shape)."""
    s = _shape(config)
    return int(s["n_layer"] * n_ctx * max(n_seq, 1) * s["n_head_kv"] * s["head_dim"] * 2 * kv_type_bytes)


def weight_files_bytes(path: Path) -> int:
    """Bytes of the model file and its external data (every file beside it but the side files)."""
    path = Path(path)
    folder = _directory(path)
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() not in SIDE_SUFFIXES]
    if path.is_file() and path not in files:
        files.append(path)
    return sum(p.stat().st_size for p in files)


def costs(path: Path, kv_value_bytes: int) -> ModelCosts:
    """Per-token work of an exported decoder, from the config.json beside it (estimated:
    norms and biases are not counted, and weight bytes are the files' bytes)."""
    config = read_config(path, required=True)
    s = _shape(config)
    if not (s["n_layer"] and s["n_head"] and s["head_dim"] and s["hidden"] and s["n_vocab"]):
        raise ModelFileError(
            f"{_directory(Path(path)) / CONFIG_FILE}: expected num_hidden_layers, num_attention_heads, hidden_size "
            f"and vocab_size, found {sorted(k for k in config if not k.startswith('_'))[:12]}")
    hidden, q_width, kv_width = s["hidden"], s["n_head"] * s["head_dim"], s["n_head_kv"] * s["head_dim"]
    mlp = (2 if config.get("model_type") in UNGATED_MLP else 3) * hidden * s["n_ff"]
    per_layer = hidden * q_width * 2 + hidden * kv_width * 2 + mlp  # q, o; k, v; MLP
    output = s["n_vocab"] * hidden
    matmul = s["n_layer"] * per_layer + output
    tied = config.get("tie_word_embeddings", True) is not False  # transformers' default is tied
    stored = matmul + (0 if tied else output)  # an untied embedding table is stored but only looked up
    weight_bytes = int(weight_files_bytes(path) * matmul / stored)
    return ModelCosts(
        matmul_params=matmul, weight_bytes_per_step=weight_bytes,
        kv_bytes_per_token=2 * s["n_layer"] * kv_width * kv_value_bytes,
        attn_flops_per_ctx_token=4 * s["n_layer"] * q_width, n_layer=s["n_layer"], output_params=output,
    )


def _files_bytes(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def memory(fmt: str, path: Path, n_ctx: int, n_seq: int = 1, *, kv_type_bytes: float = 2) -> MemoryEstimate:
    """Resident memory from file sizes, with the KV cache from a config.json beside an ONNX export."""
    path = Path(path)
    weights = _files_bytes(path)
    compute_share, overhead = FILE_SIZE_MODELS[fmt]
    kv = kv_bytes(read_config(path), n_ctx, n_seq, kv_type_bytes) if fmt == "onnx" else 0
    return MemoryEstimate.of(weights, kv, compute_share * weights, overhead, label=path.name, n_ctx=n_ctx,
                             method=f"{fmt} file size (estimated, not validated)")


def describe(fmt: str, path: Path) -> Dict[str, Any]:
    """Manifest fields an export contributes from its side files (quantization is the converter's)."""
    config = read_config(path)
    tokenizer_config_file = _directory(Path(path)) / TOKENIZER_CONFIG_FILE
    template: Optional[str] = None
    if tokenizer_config_file.is_file():
        try:
            value = json.loads(tokenizer_config_file.read_text(encoding="utf-8")).get("chat_template")
        except (OSError, ValueError, AttributeError):
            value = None
        template = value if isinstance(value, str) else None
    return dict(format=fmt, context_length=config.get("max_position_embeddings"),
                architecture=config.get("model_type"), chat_template=template,
                tokenizer={"model": "tokenizers", "vocab_size": config.get("vocab_size")})
