"""The one Hugging Face tokenizer of the ONNX Runtime and TensorRT runners: the stricter rules."""

import json

import pytest

from edgert.errors import ModelFileError
from edgert.runners.hf_tokenizer import HfTokenizer

tokenizers = pytest.importorskip("tokenizers")


def byte_level(folder):
    from tokenizers import decoders, models, pre_tokenizers

    tok = tokenizers.Tokenizer(models.BPE(vocab={"H": 0, "i": 1, "Ġ": 2, "<s>": 3, "<|end|>": 4, "<|eot|>": 5}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<s>", "<|end|>", "<|eot|>"])
    folder.mkdir(exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    return folder


def test_end_tokens_are_the_union_of_every_source(tmp_path):
    folder = byte_level(tmp_path)
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|end|>", "bos_token": "<s>"}))
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [5]}))
    (folder / "config.json").write_text(json.dumps({"eos_token_id": 4, "bos_token_id": 3}))
    tok = HfTokenizer(folder)
    assert tok.end_ids == {4, 5} and tok.bos_id == 3 and (tok.bos_text, tok.eos_text) == ("<s>", "<|end|>")


def test_chat_template_file_is_read_when_the_config_has_none(tmp_path):
    folder = byte_level(tmp_path)
    (folder / "chat_template.jinja").write_text("{{ bos_token }}{{ messages }}")
    assert HfTokenizer(folder).chat_template == "{{ bos_token }}{{ messages }}"


def test_invalid_side_file_json_is_a_model_file_error(tmp_path):
    folder = byte_level(tmp_path)
    (folder / "generation_config.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="generation_config.json: not valid JSON"):
        HfTokenizer(folder)


def test_an_added_token_decodes_to_its_text_not_question_marks(tmp_path):
    folder = byte_level(tmp_path)
    saved = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    saved.add_tokens(["ünï"])  # an added, non-special token: its text is not byte-level encoded
    saved.save(str(folder / "tokenizer.json"))
    tok = HfTokenizer(folder)
    added = tok.tokenizer.token_to_id("ünï")
    assert tok([0, 1, added]) == "Hiünï".encode() and tok([3]) == b""
