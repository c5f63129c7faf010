"""ONNX converter: SmolLM2-135M-Instruct (real weights) to fp32 / int8-dynamic / int4 with the
quality gate, and tiny random-weight models for architecture coverage (Llama, BERT, ViT, ResNet)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("optimum.exporters.onnx")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from edgert.converters.base import ConvertOptions  # noqa: E402
from edgert.converters.source import Source, resolve_source  # noqa: E402
from edgert.errors import ConversionError  # noqa: E402
from edgert.converters.onnx_convert import OnnxConverter, QUANTIZATIONS, TOOL_PACKAGES  # noqa: E402
from edgert.converters.quality import TorchReference  # noqa: E402

pytestmark = pytest.mark.slow

SMOL_QUANTS = ["fp32", "int8-dynamic", "int4"]  # as exported by tests/conftest.py:smollm2_onnx_dir


@pytest.fixture(scope="session")
def smollm2_onnx(smollm2_hf, smollm2_onnx_dir):
    """(source, {quant: artifact}, progress) of the session's ONNX export of SmolLM2."""
    out = smollm2_onnx_dir
    from edgert.converters.base import Artifact

    artifacts = {
        a["quantization"]: Artifact("onnx", a["quantization"], Path(a["path"]), [Path(f) for f in a["files"]], a["metadata"])
        for a in json.loads((out / "artifacts.json").read_text())
    }
    return resolve_source(smollm2_hf, out), artifacts, json.loads((out / "progress.json").read_text())


class _ShortReference(TorchReference):
    """The torch reference on a shorter sample (2 text windows + the chat prompts), its logits
    computed once for all quantizations: the full gate takes ~40 s per variant here."""

    def __init__(self, hf_dir):
        super().__init__(hf_dir)
        self._cache = {}

    def windows(self):
        full = super().windows()
        return full[:2] + full[6:]

    def logits(self, ids):
        key = tuple(ids)
        if key not in self._cache:
            self._cache[key] = super().logits(ids)
        return self._cache[key]


@pytest.fixture(scope="session")
def smollm2_reference(smollm2_hf):
    return _ShortReference(smollm2_hf)


@pytest.fixture(scope="session")
def smollm2_gates(smollm2_onnx, smollm2_reference):
    source, artifacts, _ = smollm2_onnx
    converter = OnnxConverter()
    options = ConvertOptions(SMOL_QUANTS, source.hf_dir, threads=2)
    return {q: converter.gate(source, a, smollm2_reference, options) for q, a in artifacts.items()}


# ---------------------------------------------------------------- SmolLM2
def test_each_quantization_is_its_own_directory_with_its_files(smollm2_onnx):
    _, artifacts, progress = smollm2_onnx
    assert sorted(artifacts) == ["fp32", "int4-block32", "int8-dynamic"]
    assert artifacts["int8-dynamic"].metadata["quantization_options"]["excluded_nodes"] == 30  # MLP down projections
    dirs = {a.path.parent for a in artifacts.values()}
    assert len(dirs) == 3
    for artifact in artifacts.values():
        assert artifact.path.name == "model.onnx" and artifact.path.is_file()
        names = {f.name for f in artifact.files}
        assert {"tokenizer.json", "config.json", "generation_config.json", "tokenizer_config.json"} <= names
        assert all(f.parent == artifact.path.parent and f.is_file() for f in artifact.files)
        assert set(TOOL_PACKAGES) - {"optimum-onnx"} <= set(artifact.metadata["tool_versions"])
        assert artifact.metadata["task"] == "text-generation-with-past"
        assert artifact.metadata["external_data"] is False
    sizes = {q: a.path.stat().st_size for q, a in artifacts.items()}
    assert max(sizes["int8-dynamic"], sizes["int4-block32"]) < sizes["fp32"] / 2
    assert artifacts["int4-block32"].metadata["quantization_options"]["block_size"] == 32
    labels = [p[0] for p in progress]
    assert labels[0] == "export ONNX" and "quantize ONNX int4-block32" in labels


def test_gate_fp32_matches_torch_closely(smollm2_gates):
    gate = smollm2_gates["fp32"]
    assert gate.passed, gate.failures
    assert gate.metrics["mean_kld"] < 1e-3
    assert gate.metrics["top1_agreement"] > 0.99
    assert abs(gate.metrics["ppl_change_pct"]) < 0.5
    assert gate.metrics["n_tokens"] > 500
    assert "onnxruntime" in gate.tool_versions


def test_gate_quantized_loses_more_but_is_bounded(smollm2_gates):
    fp32, int8, int4 = (smollm2_gates[q].metrics for q in ("fp32", "int8-dynamic", "int4-block32"))
    # measured on this sample: int8-dynamic KLD ~0.09, top-1 ~0.81; int4-block32 KLD ~0.39, top-1 ~0.66
    assert fp32["mean_kld"] < int8["mean_kld"] < 0.25 and int8["top1_agreement"] > 0.7
    assert fp32["mean_kld"] < int4["mean_kld"] < 0.6 and int4["top1_agreement"] > 0.55
    for metrics in (int8, int4):
        assert metrics["ppl_change_pct"] < 15


def test_impossible_threshold_fails_the_gate(smollm2_onnx, smollm2_reference):
    source, artifacts, _ = smollm2_onnx
    options = ConvertOptions(["int8-dynamic"], source.hf_dir, threads=2, thresholds={"max_mean_kld": 1e-9})
    gate = OnnxConverter().gate(source, artifacts["int8-dynamic"], smollm2_reference, options)
    assert not gate.passed and "mean KLD" in gate.failures[0]


def test_int8_static_is_refused_for_llms_before_any_work(smollm2_hf, tmp_path):
    source = resolve_source(smollm2_hf, tmp_path)
    with pytest.raises(ConversionError, match="int8-static.*decoder LLM"):
        OnnxConverter().convert(source, ConvertOptions(["fp32", "int8-static"], tmp_path / "work"))
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())


# ---------------------------------------------------------------- tiny models
def _save(model, out: Path) -> Path:
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_llama(smollm2_hf, tmp_path_factory) -> Path:
    """A 2-layer Llama with random weights and SmolLM2's tokenizer files."""
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                      bos_token_id=1, eos_token_id=2, tie_word_embeddings=True)
    out = _save(transformers.LlamaForCausalLM(config), tmp_path_factory.mktemp("tiny") / "llama")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                 "generation_config.json"):
        if (smollm2_hf / name).exists():
            shutil.copy2(smollm2_hf / name, out / name)
    return out


def _tiny_bert(out: Path) -> Path:
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=128)
    _save(transformers.BertForMaskedLM(config), out)
    words = "the a of and to in is it that was for on robot sea ship ocean deep water light".split()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab += ["##" + chr(c) for c in range(ord("a"), ord("z") + 1)] + list(".,;:!?'\"-()")
    (out / "vocab.txt").write_text("\n".join(vocab[:120]) + "\n")
    transformers.BertTokenizerFast(str(out / "vocab.txt")).save_pretrained(out)
    return out


def _tiny_vit(out: Path) -> Path:
    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=4, intermediate_size=64, num_labels=5)
    return _save(transformers.ViTForImageClassification(config), out)


def _tiny_resnet(out: Path) -> Path:
    torch.manual_seed(0)
    config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=5,
                                       layer_type="basic")
    return _save(transformers.ResNetForImageClassification(config), out)


def test_tiny_llama_exports_runs_and_passes_the_gate(tiny_llama, tmp_path):
    from edgert.runners.types import SamplingParams
    from edgert.runners.onnxruntime import OnnxRuntimeRunner

    source = resolve_source(tiny_llama, tmp_path)
    converter = OnnxConverter()
    assert converter.is_language_model(source)
    artifacts = converter.convert(source, ConvertOptions(["fp32", "int4"], tmp_path / "work", block_size=16))
    assert [a.quantization for a in artifacts] == ["fp32", "int4-block16"]
    reference = TorchReference(tiny_llama)
    gate = converter.gate(source, artifacts[0], reference, ConvertOptions(["fp32"], tmp_path))
    assert gate.passed, gate.failures
    assert gate.metrics["mean_kld"] < 1e-4
    with OnnxRuntimeRunner(artifacts[1].path, n_ctx=128) as runner:
        result = runner.generate("Hello", SamplingParams(max_tokens=5))
    assert result.tokens_out == 5 or result.finish_reason == "eos"


def test_external_data_is_written_and_listed_and_loads(tiny_llama, tmp_path):
    from edgert.runners.onnxruntime import OnnxRuntimeRunner

    converter = OnnxConverter()
    converter.external_data_above_bytes = 1  # as a > 2 GB model would be
    source = resolve_source(tiny_llama, tmp_path)
    artifacts = converter.convert(source, ConvertOptions(["fp32", "int8-dynamic"], tmp_path / "work"))
    for artifact in artifacts:
        assert artifact.metadata["external_data"] is True
        data = [f for f in artifact.files if f.name.startswith("model.onnx") and f != artifact.path]
        assert len(data) == 1 and data[0].stat().st_size > artifact.path.stat().st_size
        with OnnxRuntimeRunner(artifact.path, n_ctx=64) as runner:
            assert runner.logits_for([1, 2, 3]).shape == (3, 49152)


@pytest.mark.parametrize("build", [_tiny_bert, _tiny_vit, _tiny_resnet], ids=["bert", "vit", "resnet"])
def test_encoders_and_vision_models_pass_the_output_gate(build, tmp_path):
    hf_dir = build(tmp_path / "model")
    source = resolve_source(hf_dir, tmp_path)
    converter = OnnxConverter()
    assert converter.supports(source) is None and not converter.is_language_model(source)
    quants = ["fp32", "fp16", "int8-dynamic", "int4"]
    options = ConvertOptions(quants, tmp_path / "work")
    artifacts = converter.convert(source, options)
    assert len({a.path.parent for a in artifacts}) == len(quants)
    for artifact in artifacts:
        gate = converter.gate(source, artifact, None, options)
        assert gate.passed, (artifact.quantization, gate.failures)
        assert set(gate.metrics) == {"max_abs_diff", "min_cosine"}
        assert "torch" in gate.tool_versions
    fp32 = converter.gate(source, artifacts[0], None, options)
    assert fp32.metrics["max_abs_diff"] < 1e-4 and fp32.metrics["min_cosine"] > 0.99999


def test_int8_static_calibrates_on_shipped_text_for_text_models(tmp_path):
    source = resolve_source(_tiny_bert(tmp_path / "bert"), tmp_path)
    converter = OnnxConverter()
    options = ConvertOptions(["int8-static"], tmp_path / "work")
    (artifact,) = converter.convert(source, options)
    assert artifact.metadata["quantization_options"]["calibration"] == "edgert sample_en.txt"
    assert artifact.metadata["quantization_options"]["calibration_samples"] > 8
    gate = converter.gate(source, artifact, None, options)
    assert gate.passed, gate.failures


def test_int8_static_needs_a_calibration_file_for_images(tmp_path):
    source = resolve_source(_tiny_resnet(tmp_path / "resnet"), tmp_path)
    converter = OnnxConverter()
    with pytest.raises(ConversionError, match="--calibration FILE.npz.*pixel_values"):
        converter.convert(source, ConvertOptions(["int8-static"], tmp_path / "a"))
    calibration = tmp_path / "calib.npz"
    np.savez(calibration, pixel_values=np.random.default_rng(0).normal(size=(16, 3, 224, 224)).astype(np.float32))
    options = ConvertOptions(["int8-static"], tmp_path / "b", calibration=calibration)
    (artifact,) = converter.convert(source, options)
    assert artifact.metadata["quantization_options"]["calibration_samples"] == 16
    gate = converter.gate(source, artifact, None, options)
    assert gate.passed, gate.failures


def test_output_gate_thresholds_can_be_overridden(tmp_path):
    source = resolve_source(_tiny_vit(tmp_path / "vit"), tmp_path)
    converter = OnnxConverter()
    (artifact,) = converter.convert(source, ConvertOptions(["int8-dynamic"], tmp_path / "work"))
    gate = converter.gate(source, artifact, None, ConvertOptions(["int8-dynamic"], tmp_path, thresholds={"max_abs_diff": 1e-9}))
    assert not gate.passed and "max abs difference" in gate.failures[0]
    with pytest.raises(ConversionError, match="expected.*max_abs_diff.*min_cosine"):
        converter.gate(source, artifact, None, ConvertOptions(["int8-dynamic"], tmp_path, thresholds={"max_kld": 1.0}))


# ---------------------------------------------------------------- refusals
def _fake_source(tmp_path: Path, architecture: str, model_type: str) -> Source:
    config = {"architectures": [architecture], "model_type": model_type}
    (tmp_path / "config.json").write_text(json.dumps(config))
    return Source(tmp_path, "hf_dir", tmp_path, config)


def test_unsupported_decoder_names_the_supported_types(tmp_path):
    source = _fake_source(tmp_path, "MambaForCausalLM", "mamba")
    converter = OnnxConverter()
    reason = converter.supports(source)
    assert reason and "'mamba'" in reason and "llama" in reason and "qwen2" in reason
    with pytest.raises(ConversionError, match="decoder LLMs supports model types .*llama"):
        converter.convert(source, ConvertOptions(["fp32"], tmp_path / "work"))


def test_unsupported_network_names_the_supported_types(tmp_path):
    source = _fake_source(tmp_path, "FancyNetModel", "fancy_net")
    reason = OnnxConverter().supports(source)
    assert reason and "'fancy_net'" in reason and "bert" in reason and "resnet" in reason


def test_quantization_names_and_block_size_are_checked(tiny_llama, tmp_path):
    from edgert.errors import UsageError

    converter = OnnxConverter()
    assert converter.supported_quantizations() == list(QUANTIZATIONS)
    source = resolve_source(tiny_llama, tmp_path)
    with pytest.raises(UsageError, match="expected one of fp32, fp16"):
        converter.convert(source, ConvertOptions(["q4_k_m"], tmp_path / "work"))
    with pytest.raises(ConversionError, match="block size must be one of"):
        converter.convert(source, ConvertOptions(["int4"], tmp_path / "work", block_size=24))
