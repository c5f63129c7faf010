"""The fitting code recovers known parameters from synthetic samples."""

import math

import numpy as np
import pytest

from edgert.formats import ModelCosts
from edgert.profiler.roofline import (DEFAULT_UBATCH, DecodeFit, PrefillFit, error_stats, fit_decode, fit_prefill,
                                     nelder_mead, prefill_chunks, repeat_spread_pct)

COSTS = ModelCosts(matmul_params=134_479_872, weight_bytes_per_step=96_576_768, kv_bytes_per_token=23_040,
                   attn_flops_per_ctx_token=69_120, n_layer=30)
PEAK, BW = 150e9, 25e9


def test_nelder_mead_finds_a_quadratic_minimum():
    x = nelder_mead(lambda v: float(((v - np.array([1.0, -2.0, 3.0])) ** 2).sum()), np.zeros(3))
    assert np.allclose(x, [1.0, -2.0, 3.0], atol=1e-3)


def decode_samples(truth: DecodeFit, noise: float = 0.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [
        {"context_len": c, "batch": b,
         "ms": truth.predict_ms(COSTS, PEAK, BW, c, b) * (1 + noise * rng.standard_normal())}
        for c in (24, 64, 160, 384, 640, 1024) for b in range(1, 9)
    ]


@pytest.mark.parametrize("truth, overhead_identifiable", [
    (DecodeFit(eta_compute=0.3, eta_memory=0.6, eta_attention=0.2, overhead_ms=4.0), True),  # compute-bound at batch > 1
    # memory-bound throughout: weight time and overhead are both constants, only their sum is identifiable
    (DecodeFit(eta_compute=2.0, eta_memory=0.3, eta_attention=0.5, overhead_ms=1.0), False),
])
def test_decode_fit_recovers_known_parameters(truth, overhead_identifiable):
    fit = fit_decode(decode_samples(truth), COSTS, PEAK, BW)
    samples = decode_samples(truth)
    stats = error_stats([s["ms"] for s in samples],
                        [fit.predict_ms(COSTS, PEAK, BW, s["context_len"], s["batch"]) for s in samples])
    assert stats["mape_pct"] < 1.0
    assert fit.eta_attention == pytest.approx(truth.eta_attention, rel=0.1)
    if overhead_identifiable:
        assert fit.overhead_ms == pytest.approx(truth.overhead_ms, rel=0.15, abs=0.3)
    assert fit.bound(COSTS, PEAK, BW, 8) == truth.bound(COSTS, PEAK, BW, 8)
    assert all(k == pytest.approx(1.0, abs=0.03) for k in fit.kappa.values())


def test_decode_fit_with_noise_predicts_within_noise():
    truth = DecodeFit(0.3, 0.6, 0.2, 4.0)
    fit = fit_decode(decode_samples(truth, noise=0.03, seed=1), COSTS, PEAK, BW)
    clean = decode_samples(truth)
    stats = error_stats([s["ms"] for s in clean],
                        [fit.predict_ms(COSTS, PEAK, BW, s["context_len"], s["batch"]) for s in clean])
    assert stats["mape_pct"] < 3.0 and stats["within_10pct"] == 1.0


def test_kappa_calibrates_a_batch_size_the_roofline_cannot_explain():
    truth = DecodeFit(0.3, 0.6, 0.2, 4.0, kappa={1: 1.0, 2: 1.4, 3: 1.0, 4: 1.0, 5: 1.0, 6: 1.0, 7: 1.0, 8: 1.0})
    fit = fit_decode(decode_samples(truth), COSTS, PEAK, BW)
    assert fit.kappa[2] > 1.2
    assert fit.predict_ms(COSTS, PEAK, BW, 300, 2) == pytest.approx(truth.predict_ms(COSTS, PEAK, BW, 300, 2), rel=0.05)


def test_prefill_fit_recovers_known_curve():
    # a per-prompt overhead (the old form, as datasheet priors use) is matched closely too
    truth = PrefillFit(eta_compute=0.35, eta_memory=0.9, eta_attention=0.2, overhead_ms=20.0)
    samples = [{"n_tokens": n, "ms": truth.predict_ms(COSTS, PEAK, BW, n)} for n in (24, 64, 160, 384, 640, 1024)]
    fit = fit_prefill(samples, COSTS, PEAK, BW)
    for n in (32, 300, 900):
        assert fit.predict_ms(COSTS, PEAK, BW, n) == pytest.approx(truth.predict_ms(COSTS, PEAK, BW, n), rel=0.02)


QUICK_LENGTHS = (24, 64, 160, 384, 640, 1024)


def prefill_samples(truth: PrefillFit, noise: float = 0.0, seed: int = 0, reps: int = 2):
    rng = np.random.default_rng(seed)
    samples = []
    for n in QUICK_LENGTHS:
        raw = [truth.predict_ms(COSTS, PEAK, BW, n) * float(np.exp(noise * rng.standard_normal())) for _ in range(reps)]
        samples.append({"n_tokens": n, "ms": float(np.median(raw)), "raw_ms": raw})
    return samples


@pytest.mark.parametrize("truth", [
    PrefillFit(eta_compute=0.35, eta_memory=1.0, eta_attention=0.25, overhead_ms=0.0, chunk_overhead_ms=8.0),
    PrefillFit(eta_compute=0.8, eta_memory=1.0, eta_attention=0.5, overhead_ms=0.0, chunk_overhead_ms=20.0),
])
def test_chunked_prefill_fit_recovers_known_parameters(truth):
    fit = fit_prefill(prefill_samples(truth), COSTS, PEAK, BW)
    assert fit.eta_compute == pytest.approx(truth.eta_compute, rel=0.02)
    assert fit.eta_attention == pytest.approx(truth.eta_attention, rel=0.05)
    assert fit.chunk_overhead_ms == pytest.approx(truth.chunk_overhead_ms, rel=0.1)
    assert fit.eta_memory == 1.0 and fit.overhead_ms == 0.0 and fit.ubatch == DEFAULT_UBATCH
    for n in (32, 500, 513, 800, 1024, 1500):
        assert fit.predict_ms(COSTS, PEAK, BW, n) == pytest.approx(truth.predict_ms(COSTS, PEAK, BW, n), rel=0.005)


def test_prefill_fit_is_not_bent_by_one_disturbed_repeat():
    """A repeat slowed by another process (+60%) at one length moves the fit far less than
    a least-squares fit of the per-length medians would."""
    truth = PrefillFit(0.35, 1.0, 0.25, 0.0, chunk_overhead_ms=8.0)
    samples = prefill_samples(truth, noise=0.02, seed=3)
    disturbed = samples[4]  # 640 tokens: just past a chunk boundary, where the misfits were
    disturbed["raw_ms"][1] *= 1.6
    disturbed["ms"] = float(np.median(disturbed["raw_ms"]))
    fit = fit_prefill(samples, COSTS, PEAK, BW)
    for n in (100, 600, 900):
        assert fit.predict_ms(COSTS, PEAK, BW, n) == pytest.approx(truth.predict_ms(COSTS, PEAK, BW, n), rel=0.04)


def test_prefill_fit_with_noise_predicts_within_noise():
    truth = PrefillFit(0.35, 1.0, 0.25, 0.0, chunk_overhead_ms=8.0)
    fit = fit_prefill(prefill_samples(truth, noise=0.05, seed=1), COSTS, PEAK, BW)
    lengths = range(32, 1025, 31)
    stats = error_stats([truth.predict_ms(COSTS, PEAK, BW, n) for n in lengths],
                        [fit.predict_ms(COSTS, PEAK, BW, n) for n in lengths])
    assert stats["mape_pct"] < 4.0 and stats["within_10pct"] == 1.0


def test_prompt_is_split_into_micro_batches():
    assert prefill_chunks(0) == []
    assert prefill_chunks(300) == [(0, 300)]
    assert prefill_chunks(512) == [(0, 512)]
    assert prefill_chunks(640) == [(0, 512), (512, 128)]
    assert prefill_chunks(1100, ubatch=256) == [(0, 256), (256, 256), (512, 256), (768, 256), (1024, 76)]


def test_llama_cpp_runner_uses_the_default_micro_batch():
    from edgert.runners.llama_cpp import N_BATCH

    assert DEFAULT_UBATCH == N_BATCH


def test_chunked_prompt_costs_one_more_pass_than_one_chunk():
    fit = PrefillFit(0.35, 1.0, 0.25, 0.0, chunk_overhead_ms=8.0)
    within_chunk = fit.predict_ms(COSTS, PEAK, BW, 512) - fit.predict_ms(COSTS, PEAK, BW, 511)
    next_chunk = fit.predict_ms(COSTS, PEAK, BW, 513) - fit.predict_ms(COSTS, PEAK, BW, 512)
    # the 513th token is a second micro-batch: a whole pass over the weights and a second
    # fixed cost, not one more token of compute
    weight_read_ms = 1000 * (COSTS.weight_bytes_per_step + COSTS.kv_bytes_per_token) / BW
    assert next_chunk >= weight_read_ms + 8.0
    assert next_chunk > within_chunk + 8.0
    # the chunks add up, the vocabulary projection is paid in the last one only
    assert fit.predict_ms(COSTS, PEAK, BW, 640) == pytest.approx(
        fit.chunk_ms(COSTS, PEAK, BW, 0, 512, last=False) + fit.chunk_ms(COSTS, PEAK, BW, 512, 128, last=True))
    # causal attention: splitting changes no FLOPs, only the per-chunk cost (compute-bound chunks)
    whole = PrefillFit(0.35, 1.0, 0.25, 0.0, chunk_overhead_ms=8.0, ubatch=4096)
    assert fit.predict_ms(COSTS, PEAK, BW, 1024) == pytest.approx(whole.predict_ms(COSTS, PEAK, BW, 1024) + 8.0)
    # the second chunk's tokens attend to the first chunk: dearer than the same tokens alone
    assert fit.chunk_ms(COSTS, PEAK, BW, 512, 128) > fit.chunk_ms(COSTS, PEAK, BW, 0, 128)


def test_prefill_fit_reads_profiles_saved_before_chunking():
    old = {"eta_compute": 0.34, "eta_memory": 1.8, "eta_attention": 0.23, "overhead_ms": 3.0}
    fit = PrefillFit.from_dict(old)
    assert (fit.chunk_overhead_ms, fit.ubatch) == (0.0, 512)
    for n in (24, 384, 640, 1024):  # compute-bound: the old single-max form, term by term
        linear = COSTS.prefill_linear_flops(n) / (0.34 * PEAK)
        attention = COSTS.attn_flops_per_ctx_token * n * n / 2 / (0.23 * PEAK)
        assert fit.predict_ms(COSTS, PEAK, BW, n) == pytest.approx(1000 * (linear + attention) + 3.0)
    assert PrefillFit.from_dict(fit.to_dict()) == fit
    new = PrefillFit(0.3, 1.0, 0.2, 0.0, chunk_overhead_ms=7.5, ubatch=256)
    assert PrefillFit.from_dict(new.to_dict()) == new


def test_fits_refuse_too_few_samples():
    with pytest.raises(ValueError, match="at least 4"):
        fit_decode([{"context_len": 1, "batch": 1, "ms": 1.0}], COSTS, PEAK, BW)
    with pytest.raises(ValueError, match="at least 3"):
        fit_prefill([], COSTS, PEAK, BW)


def test_error_stats():
    stats = error_stats([100, 100, 100, 100], [105, 95, 120, 100])
    assert stats["mape_pct"] == pytest.approx(7.5)
    assert stats["within_10pct"] == 0.75



def test_repeat_spread_is_the_median_relative_range_of_repeated_measurements():
    assert repeat_spread_pct([[100, 110], [50, 50, 60], [10, 10.5]]) == pytest.approx(10.0)  # 10%, 20%, 5%
    assert repeat_spread_pct([[100, 110], [50, 50, 60], [10, 10.5]], quantile=1.0) == pytest.approx(20.0)
    assert math.isnan(repeat_spread_pct([[100], []]))  # nothing repeated: unknown, not zero
