"""Fixtures for converter tests: tiny random-weight models with SmolLM2's real tokenizer."""

import shutil
from pathlib import Path

import pytest

pytest.importorskip("transformers", reason="converter tests need edgert[convert]")

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir(smollm2_path, tmp_path_factory) -> Path:
    """SmolLM2's tokenizer as Hugging Face files (read from the real GGUF)."""
    from transformers import AutoTokenizer

    from edgert.converters.source import quiet_transformers

    quiet_transformers()
    out = tmp_path_factory.mktemp("smollm2-tokenizer")
    AutoTokenizer.from_pretrained(str(smollm2_path.parent), gguf_file=smollm2_path.name).save_pretrained(out)
    (out / "tokenizer.model").unlink(missing_ok=True)
    return out


def make_tiny(kind: str, out: Path, tokenizer_dir: Path, seed: int = 0, **overrides) -> Path:
    """A 2-layer random-weight model of the given family, saved as a Hugging Face directory."""
    import torch
    import transformers as tf

    common = dict(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=512, bos_token_id=1, eos_token_id=2)
    families = {
        "llama": (tf.LlamaForCausalLM, tf.LlamaConfig, dict(tie_word_embeddings=True)),
        "mistral": (tf.MistralForCausalLM, tf.MistralConfig, dict(tie_word_embeddings=False)),
        "qwen2": (tf.Qwen2ForCausalLM, tf.Qwen2Config, dict(tie_word_embeddings=True)),
        "gemma3": (tf.Gemma3ForCausalLM, tf.Gemma3TextConfig,
                   dict(head_dim=16, sliding_window=16, query_pre_attn_scalar=16)),
        "gpt2": (tf.GPT2LMHeadModel, tf.GPT2Config, dict(n_embd=64, n_layer=2, n_head=4)),
    }
    model_cls, config_cls, extra = families[kind]
    torch.manual_seed(seed)
    config = config_cls(**{**common, **extra, **overrides})
    model = model_cls(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(out)
    for name in TOKENIZER_FILES:
        shutil.copy(tokenizer_dir / name, out / name)
    return out
