"""The planner as a pure function of a synthetic accuracy table, profile and limits."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgert.errors import UsageError
from edgert.planner import Limits, pareto_frontier, plan, predict_latency_ms
from edgert.formats import ModelCosts
from edgert.profiler.profile import DeviceProfile, VariantProfile
from edgert.profiler.roofline import DecodeFit, PrefillFit
from edgert.strategies import Config


def _variant(name, params, threads=2, power_w=20.0, mape=4.0):
    costs = ModelCosts(params, params // 2, 20_000, 60_000, 24)
    return VariantProfile(
        name, "0" * 64, "Q4_0", costs, threads, PrefillFit(0.4, 0.8, 0.2, 10.0),
        DecodeFit(0.3, 0.6, 0.2, 3.0, kappa={b: 1.0 for b in range(1, 9)}),
        fit_error={"prefill_held_out": {"mape_pct": mape}, "decode_held_out": {"mape_pct": mape}},
        energy={"avg_power_w": power_w, "provenance": "measured"},
    )


def synthetic_profile(kind="cpu", cores=2):
    return DeviceProfile(
        device={"kind": kind, "name": "synthetic", "details": {"cores": cores}},
        peak_flops=100e9, bandwidth_bytes_per_s=20e9,
        variants={"small": _variant("small", 100_000_000), "large": _variant("large", 400_000_000)},
    )


def row(variant, strategy, a, n=1, t=0, correct=50, total=100, task_set="arith"):
    return {"variant": variant, "strategy": strategy, "answer_tokens": a, "n": n, "think_tokens": t,
            "task_set": task_set, "correct": correct, "total": total}


TABLE = [
    row("small", "greedy", 16, correct=30),
    row("small", "greedy", 64, correct=35),
    row("small", "sc", 64, n=5, correct=45),
    row("small", "esc", 64, n=5, correct=45),
    row("small", "bf", 32, t=128, correct=50),
    row("large", "greedy", 16, correct=55),
    row("large", "sc", 64, n=5, correct=70),
    row("large", "bon", 64, n=3, correct=60),
    row("large", "bf", 32, t=256, correct=80),
]


def test_loose_deadline_picks_the_most_accurate_configuration():
    result = plan(TABLE, synthetic_profile(), Limits(1000.0))
    assert result.feasible
    assert result.choice.config.variant == "large" and result.choice.config.strategy == "bf"
    assert result.choice.accuracy == pytest.approx(0.8)


def test_tight_deadline_trades_accuracy_for_speed_and_respects_the_bound():
    profile = synthetic_profile()
    fastest = min(predict_latency_ms(profile, Config("small", "greedy", 16), 64), 1e9)
    deadline_s = fastest * 1.3 / 1000
    result = plan(TABLE, profile, Limits(deadline_s))
    assert result.feasible
    assert result.choice.latency_bound_ms <= deadline_s * 1000
    assert all(c.latency_bound_ms > deadline_s * 1000 for c in result.candidates
               if c.accuracy > result.choice.accuracy)


def test_nothing_fits_falls_back_to_the_fastest_with_a_reason():
    result = plan(TABLE, synthetic_profile(), Limits(0.001))
    assert not result.feasible
    assert "nothing fits" in result.reason and "deadline" in result.reason
    assert result.choice.latency_bound_ms == min(c.latency_bound_ms for c in result.candidates)
    assert result.warnings == [result.reason]


def test_power_cap_lowers_threads_and_is_reported_when_impossible():
    profile = synthetic_profile()
    capped = plan(TABLE, profile, Limits(1000.0, power_w=10.0))
    assert capped.feasible and capped.choice.config.threads == 1  # 20 W at 2 threads, ~3 W at 1
    assert capped.choice.power_w <= 10.0 and capped.choice.estimated
    impossible = plan(TABLE, profile, Limits(1000.0, power_w=0.5))
    assert not impossible.feasible and "above the 0.5 W limit" in impossible.reason


def test_energy_budget_excludes_expensive_configurations():
    loose = plan(TABLE, synthetic_profile(), Limits(1000.0))
    budget = loose.choice.energy_j / 2
    result = plan(TABLE, synthetic_profile(), Limits(1000.0, energy_j=budget))
    assert result.feasible and result.choice.energy_j <= budget


def test_online_correction_shrinks_plans():
    profile = synthetic_profile()
    base = plan(TABLE, profile, Limits(1.0))
    slowed = plan(TABLE, profile, Limits(1.0), corrections={"large": 4.0, "small": 4.0})
    assert slowed.choice.latency_ms <= base.choice.latency_ms * 4
    assert slowed.choice.accuracy <= base.choice.accuracy
    one = next(c for c in base.candidates if c.config.threads == 2 and c.config.key == base.choice.config.key)
    four = next(c for c in slowed.candidates if c.config.threads == 2 and c.config.key == base.choice.config.key)
    assert four.latency_ms == pytest.approx(4 * one.latency_ms)


def test_excluded_variant_is_never_chosen():
    result = plan(TABLE, synthetic_profile(), Limits(1000.0), excluded={"large": "needs 9 GB, 2 GB available"})
    assert result.choice.config.variant == "small"
    everything = plan(TABLE, synthetic_profile(), Limits(1000.0), excluded={"large": "x", "small": "y"})
    assert not everything.feasible


def test_task_set_filter_and_missing_data_errors():
    table = TABLE + [row("small", "greedy", 16, correct=99, task_set="facts")]
    assert plan(table, synthetic_profile(), Limits(1000.0), task_set="facts").choice.accuracy == pytest.approx(0.99)
    with pytest.raises(UsageError, match="no configuration has both"):
        plan(TABLE, synthetic_profile(), Limits(1.0), task_set="unknown")


def test_bad_limits_are_usage_errors():
    for bad in (dict(deadline_s=0), dict(deadline_s=math.inf), dict(deadline_s=1, power_w=-1),
                dict(deadline_s=1, target=1.0), dict(deadline_s=1, prompt_tokens=0)):
        with pytest.raises(UsageError):
            Limits(**bad)


def test_batched_strategies_cost_more_than_greedy_and_bf_counts_thinking():
    profile = synthetic_profile()
    greedy = predict_latency_ms(profile, Config("small", "greedy", 64), 64)
    sc = predict_latency_ms(profile, Config("small", "sc", 64, n=5), 64)
    bf = predict_latency_ms(profile, Config("small", "bf", 64, think_tokens=128), 64)
    assert greedy < sc and greedy * 2 < bf


def test_pareto_frontier_is_monotone():
    result = plan(TABLE, synthetic_profile(), Limits(1000.0))
    frontier = result.frontier
    assert frontier == pareto_frontier(result.candidates)
    assert all(a.latency_bound_ms <= b.latency_bound_ms and a.accuracy < b.accuracy for a, b in zip(frontier, frontier[1:]))


@settings(max_examples=60, deadline=None)
@given(d1=st.floats(0.001, 100), d2=st.floats(0.001, 100), power=st.one_of(st.none(), st.floats(1, 40)))
def test_looser_deadline_never_lowers_expected_accuracy(d1, d2, power):
    profile = synthetic_profile()
    tight, loose = sorted((d1, d2))
    a = plan(TABLE, profile, Limits(tight, power_w=power))
    b = plan(TABLE, profile, Limits(loose, power_w=power))
    if a.feasible:
        assert b.feasible and b.choice.accuracy >= a.choice.accuracy



def test_calibrated_step_share_shortens_predictions():
    profile = synthetic_profile()
    full = plan([row("small", "greedy", 256)], profile, Limits(1000.0)).choice
    short_row = dict(row("small", "greedy", 256), steps_share_p95=0.1)
    short = plan([short_row], profile, Limits(1000.0)).choice
    assert short.latency_ms < full.latency_ms * 0.5
    prefill = profile.predict_prefill_ms("small", 64)
    assert short.latency_ms - prefill == pytest.approx(
        predict_latency_ms(profile, Config("small", "greedy", 256), 64, 0.1) - prefill)


def test_a_given_sigma_replaces_the_profiles_and_sets_the_margin():
    profile = synthetic_profile()
    own = plan(TABLE, profile, Limits(1000.0))
    wide = plan(TABLE, profile, Limits(1000.0), sigma={"large": 0.5, "small": 0.5})
    narrow = plan(TABLE, profile, Limits(1000.0), sigma={"large": 0.001})  # below the floor
    z = 1.6448536
    c = next(c for c in wide.candidates if c.config.variant == "large")
    assert c.latency_bound_ms == pytest.approx(c.latency_ms * (1 + z * 0.5), rel=1e-4)
    assert narrow.sigma["large"] == 0.05 and narrow.sigma["small"] == own.sigma["small"]
    # a wider margin can only remove configurations near the deadline
    deadline = own.choice.latency_bound_ms / 1000
    tight = plan(TABLE, profile, Limits(deadline), sigma={"large": 0.5, "small": 0.5})
    assert own.choice.config not in [c.config for c in tight.candidates if c.feasible]
    assert tight.choice.accuracy <= plan(TABLE, profile, Limits(deadline)).choice.accuracy
