"""The format registry: one table of suffixes, and costs, memory and runner options per format."""

import hashlib
import json
from pathlib import Path

import pytest

from edgert import formats
from edgert.bundle import Bundle, Variant, pack
from edgert.bundle.manifest import FORMATS
from edgert.errors import ModelFileError
from edgert.formats.gguf import read_header
from edgert.formats.gguf_costs import costs_from_header
from edgert.profiler.from_prior import profile_from_prior

# SmolLM2-135M-Instruct's config.json (the Hugging Face model the packaged GGUF was made from)
SMOLLM2_CONFIG = dict(model_type="llama", num_hidden_layers=30, hidden_size=576, num_attention_heads=9,
                      num_key_value_heads=3, intermediate_size=1536, vocab_size=49152, tie_word_embeddings=True,
                      max_position_embeddings=8192)


def export(folder: Path, config=SMOLLM2_CONFIG, weights_bytes=1000) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(b"\0" * 100)
    (folder / "model.onnx_data").write_bytes(b"\0" * (weights_bytes - 100))
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    return folder / "model.onnx"


def test_one_suffix_table_for_the_manifest_and_the_memory_check(tmp_path):
    assert FORMATS == {"gguf": ".gguf", "onnx": ".onnx", "tensorrt": ".engine"}
    assert formats.for_path("m.plan").name == formats.for_path("m.engine").name == "tensorrt"
    assert formats.for_path(export(tmp_path / "onnx").parent).name == "onnx"
    with pytest.raises(ModelFileError, match=r"expected a \.gguf, \.onnx, \.engine or \.plan model file"):
        formats.for_path(tmp_path / "weights.bin")
    with pytest.raises(ModelFileError, match="expected a model format among"):
        formats.get("safetensors")


def test_onnx_costs_from_config_agree_with_the_gguf_header_of_the_same_model(smollm2_path, tmp_path):
    gguf = costs_from_header(read_header(smollm2_path))
    onnx = formats.costs_from_file(export(tmp_path / "onnx", weights_bytes=540_000_000), "onnx")
    assert (onnx.matmul_params, onnx.output_params, onnx.n_layer) == (gguf.matmul_params, gguf.output_params, gguf.n_layer)
    assert onnx.attn_flops_per_ctx_token == gguf.attn_flops_per_ctx_token
    assert onnx.kv_bytes_per_token == 2 * gguf.kv_bytes_per_token  # fp32 cache against llama.cpp's f16
    assert onnx.weight_bytes_per_step == 540_000_000  # tied embeddings: every stored weight is read


def test_untied_embeddings_are_not_read_per_step_and_a_missing_config_is_an_error(tmp_path):
    untied = formats.costs_from_file(export(tmp_path / "a", dict(SMOLLM2_CONFIG, tie_word_embeddings=False)))
    assert untied.weight_bytes_per_step < 1000
    bare = tmp_path / "b" / "model.onnx"
    bare.parent.mkdir()
    bare.write_bytes(b"\0")
    with pytest.raises(ModelFileError, match="config.json"):
        formats.costs_from_file(bare)


def test_memory_estimate_by_the_variant_format(tmp_path):
    path = export(tmp_path / "onnx")
    estimate = formats.memory_estimate("onnx", path, n_ctx=100, kv_type_bytes=4)
    assert estimate.kv_cache_bytes == 30 * 100 * 3 * 64 * 2 * 4 and "not validated" in estimate.method
    with pytest.raises(ModelFileError, match="model not found"):
        formats.memory_estimate("gguf", tmp_path / "absent.gguf", n_ctx=100)


def _entry(root: Path, file: str) -> dict:
    data = (root / file).read_bytes()
    return {"file": file, "sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)}


def test_an_onnx_variant_gets_a_datasheet_prior_profile_and_runner_options(smollm2_path, tmp_path):
    root = tmp_path / "bundle"
    bundle = pack([smollm2_path], root, model_name="smollm2")
    export(root / "onnx", weights_bytes=540_000_000 // 1000)
    main = _entry(root, "onnx/model.onnx")
    extra_files = [_entry(root, f"onnx/{name}") for name in ("model.onnx_data", "config.json", "tokenizer_config.json")]
    bundle.manifest.variants.append(Variant(name="smollm2-onnx-fp32", format="onnx", quantization="fp32",
                                            file=main["file"], sha256=main["sha256"], size_bytes=main["size_bytes"],
                                            files=extra_files))
    bundle.save_manifest()
    bundle = Bundle.open(root)
    profile = profile_from_prior("jetson-orin-nano-8gb", bundle)
    gguf_name = bundle.variants[0].name
    assert profile.variants["smollm2-onnx-fp32"].energy["provenance"] == "estimated"
    assert 0 < profile.predict_decode_step_ms("smollm2-onnx-fp32", 256) < profile.predict_decode_step_ms(gguf_name, 256)
    onnx_variant = bundle.variant("smollm2-onnx-fp32")
    assert formats.runner_options(onnx_variant) == {}
    engine = Variant(name="e", format="tensorrt", quantization="fp16", file="m.engine", sha256="0" * 64, size_bytes=1,
                     extra={"engine": {"tensorrt": "10.3"}})
    assert formats.runner_options(engine) == {"engine_key": {"tensorrt": "10.3"}}
    assert formats.describe("onnx", root / main["file"])["chat_template"] == "{{ messages }}"
