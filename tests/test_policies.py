"""Per-prompt policies fitted on synthetic calibration records with known outcomes, and
priced by the planner."""

import numpy as np
import pytest

from edgert.errors import UsageError
from edgert.planner import Limits, plan, policy_entries
from edgert.policies import (ALWAYS, MIN_TASKS, Cascade, beats, cross_validated, fit_policies, fit_threshold, replay,
                             sign_test_z)
from edgert.strategies import Config

CHEAP = "small|greedy|n1|t0|a16"
BIG = "big|greedy|n1|t0|a16"


def records(n, cheap_ok, big_ok, margins, steps=(3, 5)):
    """Calibration records (one per variant x task) from per-task outcomes and margins."""
    out = []
    for i in range(n):
        out.append({"variant": "small", "task": f"t{i:03d}", "results": {CHEAP: {
            "answer": "1", "correct": cheap_ok[i], "samples": 1, "tokens": steps[0], "steps": steps[0],
            "signals": {"lp_mean": None, "lp_min": None, "margin": margins[i], "agreement": None}}}})
        out.append({"variant": "big", "task": f"t{i:03d}", "results": {BIG: {
            "answer": "1", "correct": big_ok[i], "samples": 1, "tokens": steps[1], "steps": steps[1],
            "signals": {"lp_mean": -0.1, "lp_min": -0.2, "margin": 5.0, "agreement": None}}}})
    return out


def accuracy_rows(cheap_ok, big_ok):
    return [{"key": CHEAP, "accuracy": float(np.mean(cheap_ok))}, {"key": BIG, "accuracy": float(np.mean(big_ok))}]


def test_threshold_separates_sure_from_unsure_answers():
    # the cheap model is right exactly when its margin is high; the big one is right everywhere
    margins = np.array([0.1, 0.2, 0.3, 2.0, 2.5, 3.0])
    cheap = margins > 1
    cut, correct = fit_threshold(margins, cheap, np.ones(6, bool))
    assert 0.3 < cut < 2.0 and correct == 6
    # the big model is never better: escalating nothing is the fewest escalations for the same count
    cut, correct = fit_threshold(margins, np.ones(6, bool), np.zeros(6, bool))
    assert cut < margins.min() and correct == 6
    # a missing signal always escalates
    values = np.array([np.nan, 1.0, 2.0])
    cut, correct = fit_threshold(values, np.array([False, True, True]), np.array([True, False, False]))
    assert correct == 3


def test_replay_counts_what_the_policy_would_have_done():
    n = 20
    margins = [0.5 if i % 2 else 3.0 for i in range(n)]
    cheap = [i % 2 == 0 for i in range(n)]  # right when sure
    big = [True] * n
    table = records(n, cheap, big, margins)
    policy = Cascade(Config.from_key(CHEAP), Config.from_key(BIG), "margin", 1.0)
    result = replay(policy, _table(table))
    assert result["correct"] == n and result["total"] == n and result["escalated"] == n // 2
    assert sorted(set(result["steps"])) == [3, 8]  # escalated tasks pay both stages
    always = replay(Cascade(Config.from_key(CHEAP), Config.from_key(BIG), ALWAYS), _table(table))
    assert always["escalated"] == n and always["correct"] == n


def _table(recs):
    out = {}
    for r in recs:
        out.setdefault(r["task"], {}).update(r["results"])
    return out


def test_fitted_cascade_is_cross_validated_and_beats_its_first_stage():
    n = 40
    rng = np.random.default_rng(0)
    margins = rng.uniform(0, 4, n)
    cheap = margins > 2
    big = rng.uniform(size=n) < 0.8
    rows = fit_policies(records(n, list(cheap), list(big), list(margins)), accuracy_rows(cheap, big), "mix")
    assert rows, "a cascade that helps must be kept"
    best = rows[0]
    assert best["first"] == CHEAP and best["then"] == BIG and best["task_set"] == "mix"
    assert best["accuracy"] > np.mean(cheap)
    assert best["accuracy"] <= best["fit_accuracy"]  # held-out thresholds cannot beat the in-sample one
    assert 0 < best["escalated_share"] < 1
    values, a, b = margins, cheap, big
    assert cross_validated(values, a, b)[0].sum() == best["correct"] or best["signal"] != "margin"
    assert best["beats_first"] and best["wins_vs_first"] > best["losses_vs_first"]


def test_no_policy_from_too_few_tasks_or_when_escalation_never_helps():
    n = MIN_TASKS - 1
    assert fit_policies(records(n, [False] * n, [True] * n, [1.0] * n), accuracy_rows([0] * n, [1] * n), "s") == []
    n = 30  # the cheap model is always right: nothing starting from it can do better
    rows = fit_policies(records(n, [True] * n, [False] * n, [1.0] * n), accuracy_rows([1] * n, [0] * n), "s")
    assert all(r["first"] != CHEAP for r in rows)
    assert [r["first"] for r in rows] == [BIG]  # (the reverse cascade helps the always-wrong big model)


def test_a_lead_over_the_first_stage_within_chance_is_not_a_policy():
    # 7 wins and 2 losses of 80 tasks: ahead by 5, as a cascade from calibration was that then
    # did 4 points worse than its first stage on held-out tasks
    first = np.array([True] * 30 + [False] * 50)
    policy = first.copy()
    policy[30:37] = True   # 7 wins
    policy[:2] = False     # 2 losses
    z = sign_test_z(69)    # 3 greedy firsts x 23 other configurations, as in that calibration
    assert 3.1 < z < 3.3 and sign_test_z(1) == pytest.approx(1.645, abs=1e-3)
    assert beats(policy, first, z) == (False, 7, 2)
    assert beats(policy, first, 1.645)[0]  # one pair tried alone: 5 > 1.645 x 3
    strong = first.copy()
    strong[30:50] = True   # 20 wins, no loss
    assert beats(strong, first, z) == (True, 20, 0)


def test_cascade_rows_round_trip_and_refuse_nonsense():
    policy = Cascade(Config.from_key(CHEAP), Config.from_key(BIG), "lp_min", -1.5)
    assert Cascade.from_dict(policy.to_dict()) == policy
    assert policy.escalates({"lp_min": -2.0}) and not policy.escalates({"lp_min": -1.0})
    assert policy.escalates({"lp_min": None}) and policy.escalates({})
    with pytest.raises(UsageError, match="signal"):
        Cascade(Config.from_key(CHEAP), Config.from_key(BIG), "vibes")
    with pytest.raises(UsageError, match="another configuration"):
        Cascade(Config.from_key(CHEAP), Config.from_key(CHEAP), "margin")
    with pytest.raises(UsageError, match="first, then"):
        Cascade.from_dict({"first": CHEAP})


class Profile:
    """A stand-in device profile with fixed per-token costs (the planner is a pure function)."""

    kind = "measured"

    def __init__(self, step_ms):
        self.step_ms = step_ms
        self.variants = {name: _VP() for name in step_ms}
        self.threads = 2

    def variant(self, name):
        return self.variants[name]

    def predict_prefill_ms(self, variant, tokens):
        return 0.5 * self.step_ms[variant] * tokens

    def predict_decode_step_ms(self, variant, context, batch):
        return self.step_ms[variant] * (1 + 0.2 * (batch - 1))


class _VP:
    energy = {"avg_power_w": 10.0, "provenance": "estimated"}
    fit_error = {"prefill_held_out": {"mape_pct": 4.0}, "decode_held_out": {"mape_pct": 4.0}}
    threads = 2
    costs = None


def table_rows(cheap_acc, big_acc):
    return [{"variant": v, "strategy": "greedy", "n": 1, "think_tokens": 0, "answer_tokens": 16, "task_set": "mix",
             "correct": int(acc * 100), "total": 100} for v, acc in (("small", cheap_acc), ("big", big_acc))]


def policy_row(accuracy, share):
    policy = Cascade(Config.from_key(CHEAP), Config.from_key(BIG), "margin", 1.0)
    return {**policy.to_dict(), "key": policy.key, "task_set": "mix", "correct": int(accuracy * 100), "total": 100,
            "accuracy": accuracy, "ci_low": 0.0, "ci_high": 1.0, "escalated_share": share}


def test_planner_prices_a_cascade_and_prefers_it_only_when_both_stages_fit(monkeypatch):
    profile = Profile({"small": 5.0, "big": 20.0})
    monkeypatch.setattr("edgert.planner.thread_options", lambda p, v: {name: [None] for name in v})
    monkeypatch.setattr("edgert.planner.at_threads", lambda p, v, t: (1.0, 10.0, False))
    monkeypatch.setattr("edgert.planner.profile_sigma", lambda p, v: 0.05)
    rows, policies = table_rows(0.5, 0.7), [policy_row(0.72, 0.4)]
    loose = plan(rows, profile, Limits(10.0, prompt_tokens=20), task_set="mix", policies=policies)
    assert loose.choice.policy is not None and loose.choice.accuracy == 0.72
    first = next(c for c in loose.candidates if c.policy is None and c.config.variant == "small")
    then = next(c for c in loose.candidates if c.policy is None and c.config.variant == "big")
    assert loose.choice.latency_ms == pytest.approx(first.latency_ms + 0.4 * then.latency_ms)
    assert loose.choice.latency_bound_ms > first.latency_bound_ms + then.latency_bound_ms * 0.99
    # a deadline the big model alone fits, but not both stages: no cascade
    tight_s = (then.latency_bound_ms + 1) / 1000
    tight = plan(rows, profile, Limits(tight_s, prompt_tokens=20), task_set="mix", policies=policies)
    assert tight.choice.policy is None and tight.choice.config.variant == "big"
    assert tight.choice.latency_bound_ms <= tight_s * 1000
    # policies of another task set are not used
    other = plan(rows, profile, Limits(10.0, prompt_tokens=20), task_set="mix",
                 policies=[{**policies[0], "task_set": "facts"}])
    assert other.choice.policy is None
    assert policy_entries(policies, "mix")[0]["escalated_share"] == 0.4


def test_second_stage_on_the_same_model_reuses_the_prompt(monkeypatch):
    profile = Profile({"small": 5.0})
    monkeypatch.setattr("edgert.planner.thread_options", lambda p, v: {name: [None] for name in v})
    monkeypatch.setattr("edgert.planner.at_threads", lambda p, v, t: (1.0, 10.0, False))
    monkeypatch.setattr("edgert.planner.profile_sigma", lambda p, v: 0.05)
    rows = table_rows(0.5, 0.7)[:1] + [{"variant": "small", "strategy": "sc", "n": 3, "think_tokens": 0,
                                         "answer_tokens": 16, "task_set": "mix", "correct": 70, "total": 100}]
    policy = Cascade(Config.from_key(CHEAP), Config.from_key("small|sc|n3|t0|a16"), ALWAYS)
    row = {**policy.to_dict(), "key": policy.key, "task_set": "mix", "correct": 71, "total": 100,
           "ci_low": 0, "ci_high": 1, "escalated_share": 1.0}
    result = plan(rows, profile, Limits(10.0, prompt_tokens=200), task_set="mix", policies=[row])
    sc = next(c for c in result.candidates if c.policy is None and c.config.strategy == "sc")
    cascade = next(c for c in result.candidates if c.policy is not None)
    assert cascade.then_latency_ms < sc.latency_ms - 0.5 * 5.0 * 150  # the 200-token prompt is not evaluated again


def test_a_policy_must_beat_a_plain_configuration_by_more_than_one_task(monkeypatch):
    profile = Profile({"small": 5.0, "big": 20.0})
    monkeypatch.setattr("edgert.planner.thread_options", lambda p, v: {name: [None] for name in v})
    monkeypatch.setattr("edgert.planner.at_threads", lambda p, v, t: (1.0, 10.0, False))
    monkeypatch.setattr("edgert.planner.profile_sigma", lambda p, v: 0.05)
    rows = table_rows(0.5, 0.7)
    by_a_hair = plan(rows, profile, Limits(10.0, prompt_tokens=20), task_set="mix", policies=[policy_row(0.705, 0.9)])
    assert by_a_hair.choice.policy is None and by_a_hair.choice.config.variant == "big"
    clearly = plan(rows, profile, Limits(10.0, prompt_tokens=20), task_set="mix", policies=[policy_row(0.73, 0.9)])
    assert clearly.choice.policy is not None and clearly.choice.accuracy == 0.73  # the reported accuracy is not lowered
