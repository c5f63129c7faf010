"""Hugging Face directory -> GGUF (F32 / F16 / BF16), written with the gguf package.

Tensors are streamed: a first pass over the safetensors headers declares every tensor
(name, shape, type, size), the header is written, then each tensor is loaded, transformed
and written on its own, so peak memory is one tensor, not the model.

The per-architecture facts (GGUF architecture, q/k permutation for llama.cpp's rotary
layout, Gemma's norm offset) follow llama.cpp's ``convert_hf_to_gguf.py``; the key names
and tensor names come from gguf-py's own tables (``gguf.Keys``, ``gguf.get_tensor_name_map``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from edgert.errors import ConversionError
from edgert.progress import Progress

from .quality import Thresholds


@dataclass(frozen=True)
class ArchSpec:
    gguf_arch: str  # name in gguf.MODEL_ARCH
    permute_qk: bool = False  # llama.cpp's LLaMA rope expects q/k rows interleaved per head
    norm_plus_one: bool = False  # Gemma stores RMSNorm weights as (w - 1)
    head_dim_keys: bool = False  # write attention.key_length / value_length


# Hugging Face "architectures" entry -> how to write it (llama.cpp convert_hf_to_gguf.py)
ARCHITECTURES: Dict[str, ArchSpec] = {
    "LlamaForCausalLM": ArchSpec("LLAMA", permute_qk=True),
    "MistralForCausalLM": ArchSpec("LLAMA", permute_qk=True),
    "Qwen2ForCausalLM": ArchSpec("QWEN2"),
    "Gemma3ForCausalLM": ArchSpec("GEMMA3", norm_plus_one=True, head_dim_keys=True),
}

@dataclass(frozen=True)
class GGUFQuantization:
    """One GGUF output type: how it is written, how big it is, how closely it must match."""

    name: str  # --quant and manifest name
    file_type: Optional[str]  # gguf.LlamaFileType member of a float type written by edgert's writer
    ftype: Optional[int]  # llama_ftype (llama.h) of a type made by llama.cpp's quantizer
    bits_per_weight: float  # for the disk-space estimate
    gate: Thresholds  # quality-gate limits (see converters/quality.py for the anchors)


#: the GGUF target's quantizations. Gate limits measured on SmolLM2-135M (source: its Q4_1 GGUF
#: dequantized), mean KLD / top-1 / ppl change: F16 0.00001/0.998/+0.03%, Q8_0 0.0053/0.947/+0.3%,
#: Q6_K 0.0145/0.942/-0.4%, Q5_K_M 0.113/0.842/+18%, Q4_K_M 0.075/0.860/+7.4%, Q4_0 0.377/0.668/+7.5%.
QUANTIZATIONS: Dict[str, GGUFQuantization] = {
    q.name: q
    for q in (
        GGUFQuantization("F32", "ALL_F32", None, 32, Thresholds(0.0005, 0.99, 0.5)),
        GGUFQuantization("F16", "MOSTLY_F16", None, 16, Thresholds(0.002, 0.98, 1.0)),
        GGUFQuantization("BF16", "MOSTLY_BF16", None, 16, Thresholds(0.005, 0.97, 2.0)),
        GGUFQuantization("Q8_0", None, 7, 8.5, Thresholds(0.02, 0.92, 3.0)),
        GGUFQuantization("Q6_K", None, 18, 6.6, Thresholds(0.05, 0.90, 5.0)),
        GGUFQuantization("Q5_K_M", None, 17, 5.7, Thresholds(0.20, 0.80, 25.0)),
        GGUFQuantization("Q4_K_M", None, 15, 4.9, Thresholds(0.20, 0.80, 15.0)),
        GGUFQuantization("Q4_0", None, 2, 4.5, Thresholds(0.60, 0.60, 25.0)),
    )
}

#: float output type name -> gguf LlamaFileType member (what write_gguf writes itself)
FLOAT_FILE_TYPES = {q.name: q.file_type for q in QUANTIZATIONS.values() if q.file_type}

# pre-tokenizer names llama.cpp knows, by what identifies the tokenizer (llama-vocab.cpp);
# used when the source does not carry one from an original GGUF
PRE_TOKENIZERS: List[Tuple[Callable[[Dict[str, Any], int], bool], str]] = [
    (lambda cfg, n: cfg.get("model_type") == "qwen2", "qwen2"),
    (lambda cfg, n: cfg.get("model_type") == "llama" and n == 49152, "smollm"),
    (lambda cfg, n: cfg.get("model_type") == "llama" and n == 128256, "llama-bpe"),
]


def supported_architectures() -> List[str]:
    return sorted(ARCHITECTURES)


def _gguf():
    try:
        import gguf
    except ImportError:
        raise ConversionError("GGUF writing unavailable: install edgert[convert]") from None
    return gguf


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class _Vocab:
    """Tokens, scores and types for the GGUF vocabulary, from the Hugging Face tokenizer
    (as convert_hf_to_gguf does: added special tokens become CONTROL tokens)."""

    def __init__(self, hf_dir: Path, vocab_size: int):
        gguf = _gguf()
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(hf_dir))
        tok_json = json.loads((hf_dir / "tokenizer.json").read_text()) if (hf_dir / "tokenizer.json").exists() else {}
        model = tok_json.get("model", {})
        # GPT-2 style byte-level BPE (SmolLM2, Qwen2, Llama 3) vs SentencePiece-style BPE with byte fallback
        self.byte_level = model.get("type") == "BPE" and "ByteLevel" in json.dumps(tok_json.get("pre_tokenizer"))
        vocab = tokenizer.get_vocab()
        reverse = {i: t for t, i in vocab.items()}
        added = tokenizer.added_tokens_decoder
        size = max(vocab_size, len(vocab))
        self.tokens: List[str] = []
        self.types: List[int] = []
        self.scores: List[float] = []
        for i in range(size):
            if i not in reverse:
                self.tokens.append(f"[PAD{i}]")
                self.types.append(gguf.TokenType.UNUSED)
            elif i in added:
                self.tokens.append(reverse[i])
                self.types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
            else:
                self.tokens.append(reverse[i])
                self.types.append(gguf.TokenType.NORMAL)
            self.scores.append(0.0 if self.byte_level else -float(i))
        if not self.byte_level:
            self._spm_fixups(gguf)

    def _spm_fixups(self, gguf) -> None:
        """Byte-fallback (SentencePiece-style) vocabularies mark <0xXX> tokens as BYTE."""
        for i, token in enumerate(self.tokens):
            if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
                self.types[i] = gguf.TokenType.BYTE


def write_gguf(hf_dir: Path, out_path: Path, out_type: str = "F16", tokenizer_overrides: Optional[Dict[str, Any]] = None,
               name: Optional[str] = None, progress: Progress = None) -> Path:
    """Write the model in ``hf_dir`` as one GGUF file of ``out_type`` (F32, F16 or BF16).

    ``tokenizer_overrides`` (pre, add_bos_token, add_eos_token, bos/eos/pad token ids) win
    over what the Hugging Face files say; a source imported from GGUF passes its original
    values, which transformers' import does not keep."""
    overrides = dict(tokenizer_overrides or {})
    gguf = _gguf()
    from safetensors import safe_open

    if out_type not in FLOAT_FILE_TYPES:
        raise ConversionError(f"GGUF output type {out_type!r}: expected one of {', '.join(FLOAT_FILE_TYPES)}")
    config = json.loads((hf_dir / "config.json").read_text())
    arch_name = (config.get("architectures") or ["?"])[0]
    if arch_name not in ARCHITECTURES:
        raise ConversionError(f"architecture {arch_name} is not supported for GGUF; supported: {', '.join(supported_architectures())}")
    if config.get("rope_scaling") not in (None, {}) and config["rope_scaling"].get("rope_type", config["rope_scaling"].get("type")) not in ("linear", "default"):
        raise ConversionError(f"rope scaling {config['rope_scaling']} is not supported by edgert's GGUF writer yet")
    spec = ARCHITECTURES[arch_name]
    arch = getattr(gguf.MODEL_ARCH, spec.gguf_arch)
    arch_str = gguf.MODEL_ARCH_NAMES[arch]
    n_layer = int(config["num_hidden_layers"])
    n_head = int(config["num_attention_heads"])
    n_head_kv = int(config.get("num_key_value_heads", n_head))
    hidden = int(config["hidden_size"])
    head_dim = int(config.get("head_dim") or hidden // n_head)
    vocab = _Vocab(hf_dir, int(config.get("vocab_size", 0)))
    tensor_map = gguf.get_tensor_name_map(arch, n_layer)

    files = sorted(hf_dir.glob("*.safetensors"))
    if not files:
        raise ConversionError(f"{hf_dir}: no *.safetensors weights to convert")
    plan = []  # (gguf name, file, hf name, shape, out dtype)
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for hf_name in handle.keys():
                if hf_name.endswith("rotary_emb.inv_freq"):
                    continue
                if hf_name == "lm_head.weight" and config.get("tie_word_embeddings"):
                    continue
                gguf_name = tensor_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
                if gguf_name is None:
                    raise ConversionError(f"tensor {hf_name} of {arch_name} has no GGUF name (unsupported variant of the architecture)")
                shape = list(handle.get_slice(hf_name).get_shape())
                dtype = "F32" if len(shape) == 1 or out_type == "F32" else out_type
                plan.append((gguf_name, file, hf_name, shape, dtype))

    tmp = out_path.with_name(out_path.name + ".partial")
    writer = gguf.GGUFWriter(str(tmp), arch_str)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name or config.get("_name_or_path") or hf_dir.name)
    writer.add_context_length(int(config.get("max_position_embeddings", 2048)))
    writer.add_embedding_length(hidden)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_rope_freq_base(float(config.get("rope_theta", 10000.0)))
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(len(vocab.tokens))
    if spec.head_dim_keys:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if config.get("sliding_window") and spec.gguf_arch == "GEMMA3":
        writer.add_sliding_window(int(config["sliding_window"]))
    scaling = config.get("rope_scaling") or {}
    if scaling.get("rope_type", scaling.get("type")) == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(scaling["factor"]))
    writer.add_file_type(getattr(gguf.LlamaFileType, FLOAT_FILE_TYPES[out_type]))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    writer.add_tokenizer_model("gpt2" if vocab.byte_level else "llama")
    pre = overrides.pop("pre", None) or next((v for test, v in PRE_TOKENIZERS if test(config, len(vocab.tokens))), "default")
    writer.add_tokenizer_pre(pre if vocab.byte_level else "default")
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    if not vocab.byte_level:
        writer.add_token_scores(vocab.scores)
    special = gguf.SpecialVocab(hf_dir, load_merges=vocab.byte_level, n_vocab=len(vocab.tokens))
    # config.json's ids are what the model was trained with; tokenizer_config text can disagree
    for key in ("bos", "eos", "pad", "unk"):
        value = overrides.pop(f"{key}_token_id", None)
        if value is None:
            value = config.get(f"{key}_token_id")
            value = value[0] if isinstance(value, list) and value else value
        if isinstance(value, int):
            special.special_token_ids[key] = value
    for key in ("add_bos_token", "add_eos_token"):
        if key in overrides:
            special.add_special_token[key[4:-6]] = bool(overrides.pop(key))
    special.add_to_gguf(writer, quiet=True)

    for gguf_name, _file, _hf, shape, dtype in plan:
        n = int(np.prod(shape))
        if dtype == "BF16":
            writer.add_tensor_info(gguf_name, shape[:-1] + [shape[-1] * 2], np.dtype(np.uint8), n * 2,
                                   raw_dtype=gguf.GGMLQuantizationType.BF16)
        else:
            writer.add_tensor_info(gguf_name, shape, np.dtype(np.float32 if dtype == "F32" else np.float16),
                                   n * (4 if dtype == "F32" else 2))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for index, (gguf_name, file, hf_name, shape, dtype) in enumerate(plan):
        with safe_open(str(file), framework="pt") as handle:
            data = handle.get_tensor(hf_name).float().numpy()
        if spec.permute_qk and hf_name.endswith("q_proj.weight"):
            data = _permute(data, n_head)
        elif spec.permute_qk and hf_name.endswith("k_proj.weight"):
            data = _permute(data, n_head_kv)
        if spec.norm_plus_one and hf_name.endswith("norm.weight"):
            data = data + 1
        if dtype == "BF16":
            data = gguf.quants.quantize(data, gguf.GGMLQuantizationType.BF16)
        else:
            data = data.astype(np.float32 if dtype == "F32" else np.float16)
        writer.write_tensor_data(data)
        if progress:
            progress(f"write GGUF {out_type}", index + 1, len(plan))
    writer.close()
    tmp.replace(out_path)
    return out_path
