"""Per-prompt policies on the real SmolLM2 bundle: a cascade escalates exactly when the
first answer's confidence is below its threshold, and escalation never breaks the deadline.

The profile, accuracy table and policy rows are synthetic (as in test_runtime_adaptive);
the runner, strategies, confidence signals, planner and runtime are the real ones.
"""

import json
import shutil

import pytest

from edgert.bundle import Bundle
from edgert.policies import ALWAYS, Cascade
from edgert.runtime import Runtime
from edgert.strategies import Config

from test_runtime_adaptive import QUESTION, calibrated_copy, slow_factory, synthetic_profile_for  # noqa: E402


@pytest.fixture(scope="module")
def base_bundle(smollm2_bundle, tmp_path_factory):
    return calibrated_copy(smollm2_bundle, tmp_path_factory.mktemp("policies") / "bundle",
                           [("greedy", 1, 0, 16, 40), ("sc", 3, 0, 16, 55)])


def with_policy(source, root, signal, threshold=0.0, accuracy=0.7):
    """A copy of ``source`` whose policy table holds one cascade, greedy -> sc x3."""
    shutil.copytree(source, root)
    bundle = Bundle.open(root)
    name = bundle.variant().name
    policy = Cascade(Config(name, "greedy", 16), Config(name, "sc", 16, n=3), signal, threshold)
    bundle.manifest.policy_table = [{**policy.to_dict(), "key": policy.key, "task_set": "arithmetic",
                                     "correct": int(accuracy * 100), "total": 100, "ci_low": 0.6, "ci_high": 0.8,
                                     "escalated_share": 0.5}]
    bundle.save_manifest()
    return root


def ask(bundle_dir, deadline_s=20.0, **runtime):
    with Runtime(bundle_dir, profile=synthetic_profile_for(bundle_dir), n_threads=2, **runtime) as rt:
        rt.preload()
        return rt.generate(QUESTION, deadline_s=deadline_s, strategy="auto", task_set="arithmetic", seed=0)


def test_cascade_escalates_exactly_below_its_threshold(base_bundle, tmp_path):
    always = ask(with_policy(base_bundle, tmp_path / "always", ALWAYS))
    assert always.plan["policy"]["signal"] == ALWAYS and always.escalated
    first = always.stages[0]
    assert first["config"].endswith("greedy|n1|t0|a16") and first["decision"] == "escalated"
    assert always.stages[1]["config"].endswith("sc|n3|t0|a16")
    value = first["signals"]["lp_mean"]
    assert value is not None and value <= 0

    above = ask(with_policy(base_bundle, tmp_path / "above", "lp_mean", value + 0.01))
    below = ask(with_policy(base_bundle, tmp_path / "below", "lp_mean", value - 0.01))
    assert above.stages[0]["signals"]["lp_mean"] == pytest.approx(value)  # same prompt, greedy: same signal
    assert above.escalated and above.config["strategy"] == "sc" and len(above.samples) == 1 + 3
    assert not below.escalated and below.stages[0]["decision"] == "confident"
    assert below.config["strategy"] == "greedy" and below.answer == first["answer"], (below.to_dict(), always.to_dict())
    data = above.to_dict()
    json.dumps(data)  # the stages are plain JSON for the trace and the server
    assert [s["config"] for s in data["stages"]] == [s["config"] for s in always.stages]


def test_escalation_never_breaks_the_deadline_under_a_slowed_runner(base_bundle, tmp_path):
    """The plan counts on both stages fitting; then decode steps take 40 ms longer than the
    profile says. The second stage is skipped or cut, the first answer stands, and the
    answer comes by the deadline."""
    bundle = with_policy(base_bundle, tmp_path / "slow", ALWAYS)
    with Runtime(bundle, profile=synthetic_profile_for(bundle), n_threads=2, runner_factory=slow_factory) as rt:
        rt.preload()
        calm = rt.generate(QUESTION, deadline_s=20, strategy="auto", task_set="arithmetic")
        deadline_s = 1.1 * calm.plan["latency_bound_ms"] / 1000
        rt.latency.reset()
        rt.runner.delay_s = 0.04
        results = [rt.generate(QUESTION, deadline_s=deadline_s, strategy="auto", task_set="arithmetic", seed=i)
                   for i in range(3)]
    assert "policy" in results[0].plan  # planned as a cascade, on the profile's (wrong) speed
    for r in results:
        assert r.latency_ms <= deadline_s * 1000 + 40 + 60, r.to_dict()  # one slowed step + scheduling slack
        if not r.stages:
            continue  # later requests may have learned that no cascade fits
        first = r.stages[0]
        if first["answer"] is not None:
            assert r.answer is not None  # never worse than the answer in hand
        if len(r.stages) > 1:
            assert r.answer in (r.stages[1]["answer"], first["answer"])


def test_a_plan_that_cannot_fit_both_stages_runs_one(base_bundle, tmp_path):
    bundle = with_policy(base_bundle, tmp_path / "tight", ALWAYS)
    profile = synthetic_profile_for(bundle)
    with Runtime(bundle, profile=profile, n_threads=2) as rt:
        rt.preload()
        loose = rt.generate(QUESTION, deadline_s=20, strategy="auto", task_set="arithmetic")
        both_ms = loose.plan["latency_bound_ms"]
        rt.latency.reset()  # plan the second request on the profile alone, as the first was
        tight = rt.generate(QUESTION, deadline_s=0.8 * both_ms / 1000, strategy="auto", task_set="arithmetic")
    assert "policy" in loose.plan and "policy" not in tight.plan and not tight.stages
    assert tight.deadline_met
