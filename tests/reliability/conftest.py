"""Fixtures for the reliability tests: a tiny random-weight Llama to convert (built once).

Its tokenizer is a 512-token byte-level BPE trained here on the converters' text sample:
with SmolLM2's 49k vocabulary the quality gate alone takes ~4 s a conversion, and the
crash tests convert about ten times.
"""

import importlib.util
from pathlib import Path

import pytest

from build_once import build_once

CONVERTER_FIXTURES = Path(__file__).parents[1] / "converters" / "conftest.py"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1 (bos), 2 (eos), as make_tiny's config


def _converter_fixtures():
    spec = importlib.util.spec_from_file_location("edgert_tests_converter_fixtures", CONVERTER_FIXTURES)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_small_tokenizer(out: Path, vocab_size: int = 512) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from edgert.converters.quality import SAMPLE_TEXT

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator([SAMPLE_TEXT.read_text()], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=SPECIAL_TOKENS[1], eos_token=SPECIAL_TOKENS[2],
                                   pad_token=SPECIAL_TOKENS[0])
    fast.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_llama_source(tmp_path_factory) -> Path:
    """A 2-layer random Llama (hidden 64, vocabulary 512) as a Hugging Face directory."""
    pytest.importorskip("transformers", reason="conversion needs edgert[convert]")
    fixtures = _converter_fixtures()
    base = tmp_path_factory.getbasetemp()
    tokenizer = build_once(base, "reliability-tokenizer", build_small_tokenizer)
    return build_once(base, "reliability-tiny-llama",
                      lambda out: fixtures.make_tiny("llama", out, tokenizer, vocab_size=len(tokenizer_vocab(tokenizer))))


def tokenizer_vocab(tokenizer_dir: Path) -> dict:
    import json

    return json.loads((tokenizer_dir / "tokenizer.json").read_text())["model"]["vocab"]
