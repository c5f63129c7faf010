"""HF -> GGUF writer, llama.cpp quantization and the quality gate, on tiny and real models."""

import os

import pytest

from edgert.bundle import MANIFEST_NAME, Bundle
from edgert.errors import ConversionError, QualityGateError
from edgert.converters.gguf_writer import write_gguf
from edgert.converters.pipeline import convert
from edgert.converters.quality import SAMPLE_TEXT, RunnerLogits, TorchReference, evaluate_lm
from edgert.errors import UsageError
from edgert.runners.types import SamplingParams
from edgert.runners.llama_cpp import LlamaCppRunner

from conftest import make_tiny


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "gemma3"])
def test_writer_output_matches_torch_logits(family, smollm2_tokenizer_dir, tmp_path):
    """q/k permutation, tensor names, norms and hyperparameters are right iff llama.cpp
    computes the same next-token distribution as transformers (sequence > Gemma's window)."""
    hf = make_tiny(family, tmp_path / family, smollm2_tokenizer_dir)
    gguf = write_gguf(hf, tmp_path / "m.gguf", "F32")
    reference = TorchReference(hf)
    ids = reference.tokenize(SAMPLE_TEXT.read_text())[:48]
    candidate = RunnerLogits("gguf", gguf, n_ctx=1024, n_threads=2, n_seq_max=1)
    try:
        metrics = evaluate_lm(reference, candidate, [ids])
    finally:
        candidate.close()
    assert metrics["mean_kld"] < 1e-5, metrics
    assert metrics["top1_agreement"] == 1.0


def test_writer_refuses_unsupported_architecture(smollm2_tokenizer_dir, tmp_path):
    hf = make_tiny("gpt2", tmp_path / "gpt2", smollm2_tokenizer_dir)
    with pytest.raises(ConversionError, match="GPT2LMHeadModel is not supported for GGUF; supported: Gemma3ForCausalLM"):
        write_gguf(hf, tmp_path / "m.gguf")


def test_bf16_and_f16_outputs_are_typed(smollm2_tokenizer_dir, tmp_path):
    from edgert.formats.gguf import read_header

    hf = make_tiny("llama", tmp_path / "llama", smollm2_tokenizer_dir)
    for out_type in ("F16", "BF16"):
        header = read_header(write_gguf(hf, tmp_path / f"{out_type}.gguf", out_type))
        assert header.quantization == out_type
        types = {t.type_name for t in header.tensors}
        assert types == {out_type, "F32"}  # norms stay F32


@pytest.fixture(scope="module")
def converted(smollm2_path, tmp_path_factory):
    """The real SmolLM2 GGUF imported (dequantized) and converted to Q8_0 and Q4_K_M."""
    out = tmp_path_factory.mktemp("convert") / "bundle"
    result = convert(smollm2_path, "gguf", ["Q8_0", "Q4_K_M"], out, threads=2)
    return out, result


def test_real_conversion_adds_gated_variants(converted):
    out, result = converted
    bundle = Bundle.open(out)
    assert [v.name for v in bundle.variants] == ["smollm2-135m-instruct-q8_0", "smollm2-135m-instruct-q4_k_m"]
    for variant in bundle.variants:
        gate = variant.quality_gate
        assert gate["passed"] is True
        assert 0 < gate["metrics"]["mean_kld"] <= gate["thresholds"]["max_mean_kld"]
        assert gate["metrics"]["n_tokens"] > 1000
        assert variant.provenance["source_kind"] == "gguf"
        assert "llama-cpp-python" in variant.provenance["tool_versions"]
        assert variant.chat_template and "<|im_start|>" in variant.chat_template
    q8, q4 = bundle.variants
    assert q8.quality_gate["metrics"]["mean_kld"] < q4.quality_gate["metrics"]["mean_kld"]
    assert q4.size_bytes < q8.size_bytes
    bundle.verify()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".edgert-staging")]


def test_converted_model_answers_like_its_source(converted, smollm2_path):
    out, _ = converted
    bundle = Bundle.open(out)
    answers = []
    for path in (smollm2_path, bundle.artifact(bundle.variant("smollm2-135m-instruct-q8_0"))):
        with LlamaCppRunner(path, n_ctx=512, n_threads=2) as runner:
            answers.append(runner.generate("What is the capital of France?", SamplingParams(max_tokens=8)).token_ids)
    assert answers[0][:4] == answers[1][:4]


def test_failed_gate_adds_nothing(converted, smollm2_tokenizer_dir, tmp_path):
    out, _ = converted
    before = (out / MANIFEST_NAME).read_bytes()
    files_before = sorted(os.listdir(out))
    tiny = make_tiny("llama", tmp_path / "tiny", smollm2_tokenizer_dir)
    with pytest.raises(QualityGateError, match="Q4_0: mean KLD .* > 1e-07"):
        convert(tiny, "gguf", ["F16", "Q4_0"], out, thresholds={"max_mean_kld": 1e-7}, threads=2)
    assert (out / MANIFEST_NAME).read_bytes() == before
    assert sorted(os.listdir(out)) == files_before
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".edgert-staging")]


def test_existing_variant_is_refused_before_converting(converted, smollm2_path):
    out, _ = converted
    with pytest.raises(Exception, match="already exist"):
        convert(smollm2_path, "gguf", ["Q8_0"], out)


def test_pickle_checkpoints_need_trust(smollm2_tokenizer_dir, tmp_path):
    import torch
    from safetensors.torch import load_file

    hf = make_tiny("llama", tmp_path / "pickled", smollm2_tokenizer_dir)
    state = load_file(str(hf / "model.safetensors"))
    torch.save(state, hf / "pytorch_model.bin")
    (hf / "model.safetensors").unlink()
    with pytest.raises(ConversionError, match="--trust-pickle"):
        convert(hf, "gguf", ["F16"], tmp_path / "b")
    assert not (tmp_path / "b").exists()
    result = convert(hf, "gguf", ["F16"], tmp_path / "b", trust_pickle=True)
    assert result.added[0].quality_gate["passed"]


def test_malicious_pickle_is_refused_even_when_trusted(smollm2_tokenizer_dir, tmp_path):
    import pickle

    hf = make_tiny("llama", tmp_path / "evil", smollm2_tokenizer_dir)
    (hf / "model.safetensors").unlink()

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    with open(hf / "pytorch_model.bin", "wb") as handle:
        pickle.dump({"w": Evil()}, handle)
    with pytest.raises(ConversionError, match="weights_only=True"):
        convert(hf, "gguf", ["F16"], tmp_path / "b", trust_pickle=True)
    assert not (tmp_path / "pwned").exists()


def test_bad_requests(tmp_path, smollm2_path):
    with pytest.raises(UsageError, match="--quant Q3_X is not available for --to gguf"):
        convert(smollm2_path, "gguf", ["Q3_X"], tmp_path / "b")
    with pytest.raises(ConversionError, match="source not found"):
        convert(tmp_path / "missing", "gguf", ["F16"], tmp_path / "b")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ConversionError, match="expected a Hugging Face model directory or a .gguf file"):
        convert(tmp_path / "notes.txt", "gguf", ["F16"], tmp_path / "b")
    assert not (tmp_path / "b").exists()
