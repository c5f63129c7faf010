"""The fitting code recovers known parameters from synthetic samples."""

import numpy as np
import pytest

from edgert.profiler.costs import ModelCosts
from edgert.profiler.roofline import DecodeFit, PrefillFit, error_stats, fit_decode, fit_prefill, nelder_mead

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
    truth = PrefillFit(eta_compute=0.35, eta_memory=0.9, eta_attention=0.2, overhead_ms=20.0)
    samples = [{"n_tokens": n, "ms": truth.predict_ms(COSTS, PEAK, BW, n)} for n in (24, 64, 160, 384, 640, 1024)]
    fit = fit_prefill(samples, COSTS, PEAK, BW)
    for n in (32, 300, 900):
        assert fit.predict_ms(COSTS, PEAK, BW, n) == pytest.approx(truth.predict_ms(COSTS, PEAK, BW, n), rel=0.02)


def test_fits_refuse_too_few_samples():
    with pytest.raises(ValueError, match="at least 4"):
        fit_decode([{"context_len": 1, "batch": 1, "ms": 1.0}], COSTS, PEAK, BW)
    with pytest.raises(ValueError, match="at least 3"):
        fit_prefill([], COSTS, PEAK, BW)


def test_error_stats():
    stats = error_stats([100, 100, 100, 100], [105, 95, 120, 100])
    assert stats["mape_pct"] == pytest.approx(7.5)
    assert stats["within_10pct"] == 0.75

