import json

import pytest

from edgert.errors import ProfileError
from edgert.formats.gguf import read_header
from edgert.formats.gguf_costs import costs_from_header
from edgert.profiler.measure import choose_device
from edgert.profiler.profile import DeviceProfile, VariantProfile
from edgert.profiler.roofline import DecodeFit, PrefillFit

from gguf_factory import STR, U32, kv, write_gguf


def test_smollm2_costs(smollm2_path):
    costs = costs_from_header(read_header(smollm2_path))
    assert costs.kv_bytes_per_token == 2 * 30 * 3 * 64 * 2  # K+V, 30 layers, 3 KV heads of 64, f16
    assert costs.attn_flops_per_ctx_token == 4 * 30 * 9 * 64
    assert 130e6 < costs.matmul_params < 140e6  # tied embeddings: the output projection counts
    assert costs.decode_flops(0, 4) == 4 * costs.decode_flops(0, 1)
    assert costs.decode_bytes(100, 2) - costs.decode_bytes(0, 2) == 200 * costs.kv_bytes_per_token


def test_untied_embedding_is_a_lookup_not_a_matmul(tmp_path):
    meta = [kv("general.architecture", STR, "llama"), kv("llama.block_count", U32, 1),
            kv("llama.embedding_length", U32, 32), kv("llama.attention.head_count", U32, 4)]
    tensors = [("token_embd.weight", [32, 100], 0), ("output.weight", [32, 100], 0), ("blk.0.attn_q.weight", [32, 32], 0)]
    costs = costs_from_header(read_header(write_gguf(tmp_path / "m.gguf", metadata=meta, tensors=tensors)))
    assert costs.matmul_params == 32 * 100 + 32 * 32


def make_profile() -> DeviceProfile:
    from edgert.formats import ModelCosts

    costs = ModelCosts(100_000_000, 60_000_000, 20_000, 60_000, 24)
    variant = VariantProfile("m-q4", "0" * 64, "Q4_0", costs, 2, PrefillFit(0.4, 0.8, 0.2, 10.0),
                             DecodeFit(0.3, 0.6, 0.2, 3.0, kappa={1: 1.0, 8: 1.2}),
                             energy={"prefill_j_per_token": 0.01, "decode_j_per_token": 0.1, "provenance": "estimated"})
    return DeviceProfile(device={"name": "test"}, peak_flops=100e9, bandwidth_bytes_per_s=20e9, variants={"m-q4": variant})


def test_profile_roundtrip_and_predictions(tmp_path):
    profile = make_profile()
    profile.save(tmp_path / "p.json")
    loaded = DeviceProfile.load(tmp_path / "p.json")
    assert loaded.predict_decode_step_ms("m-q4", 500, 4) == pytest.approx(profile.predict_decode_step_ms("m-q4", 500, 4))
    assert loaded.variants["m-q4"].decode.kappa_for(4.5) == pytest.approx(1.1)
    total = loaded.predict_generation_ms("m-q4", 100, 50)
    assert total == pytest.approx(loaded.predict_prefill_ms("m-q4", 100) + 50 * loaded.predict_decode_step_ms("m-q4", 125))
    assert loaded.predict_energy_j("m-q4", 100, 50, batch=2) == pytest.approx(100 * 0.01 + 50 * 2 * 0.1)
    assert loaded.predict_decode_step_ms("m-q4", 100, 2) > loaded.predict_decode_step_ms("m-q4", 100, 1)


def test_profile_errors(tmp_path):
    with pytest.raises(ProfileError, match="no measurements of variant 'x'; it has: m-q4"):
        make_profile().predict_prefill_ms("x", 10)
    data = make_profile().to_dict()
    data["schema_version"] = 9
    (tmp_path / "p.json").write_text(json.dumps(data))
    with pytest.raises(ProfileError, match="schema_version 9"):
        DeviceProfile.load(tmp_path / "p.json")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ProfileError, match="not a JSON device profile"):
        DeviceProfile.load(tmp_path / "bad.json")
    with pytest.raises(ProfileError, match="not found"):
        DeviceProfile.load(tmp_path / "missing.json")


class _Dev:
    def __init__(self, kind):
        self.kind = kind


def test_choose_device_prefers_where_the_model_runs():
    cpu, gpu, jetson = _Dev("cpu"), _Dev("nvidia-gpu"), _Dev("jetson")
    assert choose_device([cpu, gpu], gpu_offload=True) is gpu
    assert choose_device([cpu, gpu], gpu_offload=False) is cpu
    assert choose_device([cpu, jetson], gpu_offload=True) is jetson


def test_profile_from_a_prior_plans_for_a_device_you_do_not_have(smollm2_bundle, tmp_path):
    from edgert.bundle import Bundle
    from edgert.profiler.from_prior import profile_from_prior

    bundle = Bundle.open(smollm2_bundle)
    name = bundle.variant().name
    nano = profile_from_prior("jetson-orin-nano-8gb", bundle)
    rtx = profile_from_prior("rtx-4090-24gb", bundle)
    assert nano.kind == "prior" and nano.provenance == "estimated (datasheet prior jetson-orin-nano-8gb)"
    assert nano.variants[name].energy["provenance"] == "estimated"
    assert rtx.predict_decode_step_ms(name, 256) < nano.predict_decode_step_ms(name, 256)
    assert nano.predict_prefill_ms(name, 512) > nano.predict_prefill_ms(name, 64)
    slow_mode = profile_from_prior("jetson-orin-nano-8gb", bundle, power_mode="7W")
    assert slow_mode.variants[name].energy["avg_power_w"] == 7
    nano.save(tmp_path / "nano.json")
    assert DeviceProfile.load(tmp_path / "nano.json").provenance.startswith("estimated")
    with pytest.raises(ProfileError, match="no power mode '99W'"):
        profile_from_prior("jetson-orin-nano-8gb", bundle, power_mode="99W")


def test_prefill_counts_the_vocabulary_projection_once(smollm2_path):
    costs = costs_from_header(read_header(smollm2_path))
    assert costs.output_params == 576 * 49152  # tied embeddings serve as the output matrix
    per_token = 2 * (costs.matmul_params - costs.output_params)
    assert costs.prefill_linear_flops(100) == 100 * per_token + 2 * costs.output_params
