import struct

import pytest

from edgert.errors import ModelFileError
from edgert.formats.gguf import read_header

from gguf_factory import ARR, STR, U32, build_gguf, default_metadata, kv, write_gguf


def test_reads_metadata_tensors_and_derived_fields(tmp_path):
    path = write_gguf(tmp_path / "m.gguf", metadata=default_metadata(file_type=7))
    header = read_header(path)
    assert header.version == 3
    assert header.architecture == "llama"
    assert header.quantization == "Q8_0"
    assert header.context_length == 256
    assert header.parameter_count == 8 * 4 + 8
    assert header.chat_template == "{{ messages[0]['content'] }}"
    info = header.tokenizer_info()
    assert info["vocab_size"] == 3 and info["bos_token_id"] == 1 and info["eos_token_id"] == 2


def test_quantization_falls_back_to_dominant_tensor_type(tmp_path):
    meta = [kv("general.architecture", STR, "llama")]
    path = write_gguf(tmp_path / "m.gguf", metadata=meta, tensors=[("a", [64, 4], 1), ("b", [4], 0)])
    assert read_header(path).quantization == "F16"


@pytest.mark.parametrize(
    "blob, message",
    [
        (b"", "empty"),
        (b"GGML" + b"\0" * 60, "expected magic b'GGUF'"),
        (build_gguf(version=1), "version 1 is not supported"),
        (build_gguf(n_tensors=2**63), "tensor count is"),
        (build_gguf(n_kv=2**64 - 1), "metadata key count is"),
        (build_gguf()[:40], "left"),
        (build_gguf(data=False), "file truncated"),
        (build_gguf(tensors=[("t", [8, 2**62], 0)], data=False), "data section"),
        (build_gguf(tensors=[("t", [8], 99)]), "unknown type 99"),
        (build_gguf(metadata=[kv("k", STR, "v")[:-1] + b"\xff"]), "not UTF-8"),
    ],
    ids=["empty", "magic", "version", "tensor-count", "kv-count", "truncated-header",
         "truncated-data", "huge-dims", "unknown-tensor-type", "bad-utf8"],
)
def test_malformed_files_give_clear_errors(tmp_path, blob, message):
    path = tmp_path / "bad.gguf"
    path.write_bytes(blob)
    with pytest.raises(ModelFileError, match=message):
        read_header(path)


def test_array_length_beyond_file_is_refused(tmp_path):
    bad = kv("general.architecture", STR, "llama") + (
        struct.pack("<Q", 3) + b"arr" + struct.pack("<IIQ", ARR, U32, 2**63)
    )
    path = tmp_path / "bad.gguf"
    path.write_bytes(build_gguf(metadata=[bad], tensors=[], n_kv=2))
    with pytest.raises(ModelFileError, match="length of array 'arr' is 9223372036854775808"):
        read_header(path)


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        read_header(tmp_path / "nope.gguf")


def test_real_smollm2_header(smollm2_path):
    header = read_header(smollm2_path)
    assert header.architecture == "llama"
    assert header.quantization == "Q4_1"
    assert header.context_length == 8192
    assert 130e6 < header.parameter_count < 140e6  # SmolLM2-135M
    assert header.tokenizer_info()["vocab_size"] == 49152
    assert "<|im_start|>" in header.chat_template
