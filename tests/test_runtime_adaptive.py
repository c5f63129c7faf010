"""The adaptive runtime on the real SmolLM2 bundle: planning per request, the deadline
guarantee under an artificially slowed runner, online recalibration, the JSONL trace.

The profile and accuracy table are synthetic (fitted-model parameters chosen to resemble
this machine), so the tests do not need a 50 s profiling run; the runner, strategies and
planner are the real ones.
"""

import json
import time

import pytest

from edgert.bundle import Bundle
from edgert.errors import UsageError
from edgert.formats import costs_from_file
from edgert.profiler.profile import DeviceProfile, VariantProfile
from edgert.profiler.roofline import DecodeFit, PrefillFit
from edgert.runners.llama_cpp import LlamaCppRunner
from edgert.runners.registry import open_runner
from edgert.runtime import Runtime

QUESTION = "Sam has 5 marbles and finds 3 more. How many marbles does Sam have?"


def calibrated_copy(source, root, configs):
    """A copy of a bundle at ``root`` with an arithmetic accuracy table (as `edgert calibrate`
    writes it) for its first variant; configs: (strategy, n, think_tokens, answer_tokens,
    correct of 100)."""
    import shutil

    shutil.copytree(source, root)
    bundle = Bundle.open(root)
    name = bundle.variant().name
    bundle.manifest.accuracy_table = [
        {"variant": name, "strategy": strategy, "n": n, "think_tokens": t, "answer_tokens": a,
         "task_set": "arithmetic", "correct": correct, "total": 100} for strategy, n, t, a, correct in configs]
    bundle.save_manifest()
    return root


@pytest.fixture(scope="module")
def adaptive_bundle(smollm2_bundle, tmp_path_factory):
    """The SmolLM2 bundle with a small accuracy table."""
    return calibrated_copy(smollm2_bundle, tmp_path_factory.mktemp("adaptive") / "bundle",
                           [("greedy", 1, 0, 16, 40), ("greedy", 1, 0, 64, 45), ("sc", 5, 0, 32, 60),
                            ("esc", 5, 0, 32, 60), ("bf", 1, 64, 16, 70)])


def synthetic_profile_for(bundle_dir):
    """A profile whose fitted models predict ~10 ms decode steps and ~4 ms/token prefill
    for the bundle's first variant (parameters chosen to resemble this machine)."""
    bundle = Bundle.open(bundle_dir)
    v = bundle.variant()
    costs = costs_from_file(bundle.artifact(v))
    prefill = PrefillFit(eta_compute=0.07, eta_memory=1.0, eta_attention=0.5, overhead_ms=5.0)
    decode = DecodeFit(eta_compute=0.5, eta_memory=0.5, eta_attention=0.5, overhead_ms=1.0,
                       kappa={b: 1.0 for b in range(1, 9)})
    vp = VariantProfile(v.name, v.sha256, v.quantization, costs, 2, prefill, decode,
                        fit_error={"prefill_held_out": {"mape_pct": 5.0}, "decode_held_out": {"mape_pct": 5.0}},
                        energy={"avg_power_w": 20.0, "provenance": "estimated"})
    return DeviceProfile(device={"kind": "cpu", "name": "test", "details": {"cores": 2}}, peak_flops=100e9,
                         bandwidth_bytes_per_s=20e9, variants={v.name: vp})


@pytest.fixture(scope="module")
def profile(adaptive_bundle):
    return synthetic_profile_for(adaptive_bundle)


class SlowRunner(LlamaCppRunner):
    """The real llama.cpp runner with a delay added to every decode step (a throttled device)."""

    delay_s = 0.0

    def _decode_impl(self, token, should_abort):
        time.sleep(self.delay_s)
        return super()._decode_impl(token, should_abort)

    def _decode_batch_impl(self, tokens, seqs, position):
        time.sleep(self.delay_s)
        return super()._decode_batch_impl(tokens, seqs, position)


def slow_factory(bundle, variant, n_ctx, n_threads):
    return SlowRunner(bundle.artifact(variant), n_ctx=n_ctx, n_threads=n_threads)


def test_auto_plans_runs_and_reports_telemetry(adaptive_bundle, profile, tmp_path):
    trace = tmp_path / "trace.jsonl"
    with Runtime(adaptive_bundle, profile=profile, trace_path=trace, n_threads=2) as rt:
        rt.preload()
        loose = rt.generate(QUESTION, deadline_s=30, strategy="auto", task_set="arithmetic")
        tight = rt.generate(QUESTION, deadline_s=0.6, strategy="auto", task_set="arithmetic")
    assert loose.config["strategy"] == "bf" and loose.plan["feasible"]  # the most accurate row
    assert loose.deadline_met and loose.answer is not None
    assert tight.config["strategy"] == "greedy"  # only the cheap configurations fit 0.6 s
    assert tight.deadline_met
    assert loose.energy_provenance == "estimated" and loose.energy_j > 0
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [r["config"]["strategy"] for r in records] == ["bf", "greedy"]
    assert all(r["plan"]["planning_ms"] < 1000 and "corrections" in r for r in records)
    data = loose.to_dict()
    assert data["config"]["think_tokens"] == 64 and data["plan"]["expected_accuracy"] == 0.7


@pytest.mark.parametrize("strategy_name", ["greedy", "sc", "bf"])
def test_deadline_holds_under_an_artificially_slowed_runner(adaptive_bundle, profile, strategy_name):
    """Steps take 40 ms longer than the profile predicts: the plan is wrong, the deadline holds."""
    with Runtime(adaptive_bundle, profile=profile, n_threads=2, runner_factory=slow_factory) as rt:
        rt.preload()
        rt.runner.delay_s = 0.04
        budget = 8 if strategy_name == "bf" else 64  # bf: a short answer phase, so thinking gets time too
        results = [rt.generate(QUESTION, deadline_s=1.0, strategy=strategy_name, max_tokens=budget, n=3,
                               think_tokens=200, answer_type="number") for _ in range(3)]
    for r in results:
        assert r.latency_ms <= 1000 + 40 + 60, r.to_dict()  # one slowed step + scheduling slack
    if strategy_name == "bf":
        assert all(r.forced for r in results)  # thinking was cut to leave the answer its time
        assert any(r.samples[-1].tokens_out > 0 for r in results)


def test_online_recalibration_after_a_slowdown_shrinks_plans(adaptive_bundle, profile):
    with Runtime(adaptive_bundle, profile=profile, n_threads=2, runner_factory=slow_factory) as rt:
        rt.preload()
        # 6 s: before the slowdown only budget forcing (~3.3 s predicted) is the best fit; after
        # it (corrections of 2.5-3.5 seen on this machine) bf no longer fits but greedy does.
        # At 4 s a correction above ~2.7 left nothing feasible (CI stop 9).
        before = rt.generate(QUESTION, deadline_s=6.0, strategy="auto", task_set="arithmetic")
        calm = dict(rt.latency.corrections)
        rt.runner.delay_s = 0.04  # decode steps become several times slower
        during = [rt.generate(QUESTION, deadline_s=6.0, strategy="auto", task_set="arithmetic") for _ in range(3)]
    key = next(iter(rt.latency.corrections))
    why = f"before {before.plan} / after {[r.plan for r in during]} / corrections {calm} -> {rt.latency.corrections}"
    # observed/predicted rose several-fold (here 0.5 -> 2.3; the absolute values depend on the machine)
    assert rt.latency.corrections[key] > 2 * calm[key], why
    assert before.plan["expected_accuracy"] > during[-1].plan["expected_accuracy"], why
    assert during[-1].plan["feasible"] and during[-1].plan["predicted_latency_ms"] <= 6000, why


def test_auto_needs_a_profile_and_a_deadline(adaptive_bundle, profile):
    with Runtime(adaptive_bundle, n_threads=2) as rt:
        with pytest.raises(UsageError, match="needs a device profile"):
            rt.generate(QUESTION, deadline_s=1, strategy="auto")
    with Runtime(adaptive_bundle, profile=profile, n_threads=2) as rt:
        with pytest.raises(UsageError, match="needs a deadline"):
            rt.generate(QUESTION, strategy="auto")
        with pytest.raises(UsageError, match="power limit"):
            rt.generate(QUESTION, deadline_s=1, strategy="auto", power_w=-3)


def test_power_limit_lowers_the_thread_count(adaptive_bundle, profile):
    with Runtime(adaptive_bundle, profile=profile, n_threads=2) as rt:
        rt.preload()
        r = rt.generate(QUESTION, deadline_s=30, power_w=8, strategy="auto", task_set="arithmetic")
        assert r.threads == 1 and rt.runner.n_threads == 1
        assert r.energy_j < 8 * r.latency_ms / 1000
        plain = rt.generate("Say hi.", max_tokens=4)
        assert plain.threads == 2 and rt.runner.n_threads == 2  # back to the runtime's default


def test_open_runner_checks_the_hash_first(adaptive_bundle):
    bundle = Bundle.open(adaptive_bundle)
    runner = open_runner(bundle, bundle.variant(), n_ctx=256, n_threads=1)
    assert isinstance(runner, LlamaCppRunner) and not runner.loaded


def _observed(ms_per_step: float):
    """The step records of one request whose decode steps took ``ms_per_step`` each."""
    from edgert.runners.types import StepRecord

    return [StepRecord("decode", 1, 100 + i, ms_per_step) for i in range(20)]


def test_sigma_narrows_on_a_steady_device_and_widens_on_an_erratic_one(adaptive_bundle, profile):
    from edgert.profiler.online import SIGMA_FLOOR, profile_sigma

    name = Bundle.open(adaptive_bundle).variant().name
    predicted = profile.predict_decode_step_ms(name, 110)
    prior = profile_sigma(profile, name)
    steady = Runtime(adaptive_bundle, profile=profile, n_threads=2)
    for _ in range(30):  # 1.5x slower than profiled, every time: a bias the correction absorbs
        steady.latency.observe(name, 2, _observed(1.5 * predicted))
    assert steady.latency.corrections[f"{name}@2"] == pytest.approx(1.5, rel=1e-3)
    assert steady.latency.sigma(name) == SIGMA_FLOOR < prior  # no spread left after correcting the bias

    erratic = Runtime(adaptive_bundle, profile=profile, n_threads=2)
    for i in range(30):  # alternately 30% faster and 30% slower
        erratic.latency.observe(name, 2, _observed((0.7 if i % 2 else 1.3) * predicted))
    assert erratic.latency.sigma(name) > 2 * prior
    # one outlier after a long steady run barely moves it (median of the window)
    steady.latency.observe(name, 2, _observed(6 * predicted))
    assert steady.latency.sigma(name) < 1.2 * SIGMA_FLOOR
    # the planner is given the runtime's sigma, so the steady runtime's bound is the tighter one
    steady.latency.reset()
    assert steady.latency.sigma(name) == prior and not steady.latency.corrections


def test_a_throttle_event_switches_the_latency_correction_to_that_state(adaptive_bundle, profile, tmp_path):
    """A faked CPU throttle counter rises while the runner slows down: the runtime learns the
    slowdown under the throttled state, and the calm state's correction is not averaged with it."""
    import shutil
    from pathlib import Path

    from edgert.devices.state import StateReader

    root = tmp_path / "sysfs"
    shutil.copytree(Path(__file__).parent / "fixtures" / "sysfs" / "x86-laptop", root, symlinks=True)
    reader = StateReader(root, nvml=False)
    counter = root / "sys/devices/system/cpu/cpu0/thermal_throttle/core_throttle_count"
    with Runtime(adaptive_bundle, profile=profile, n_threads=2, runner_factory=slow_factory,
                 device_state=reader) as rt:
        rt.preload()
        ask = dict(deadline_s=10.0, strategy="greedy", max_tokens=12)
        calm = [rt.generate(QUESTION, **ask) for _ in range(2)]
        calm_correction = dict(rt.latency.corrections)
        counter.write_text("5\n")
        rt.runner.delay_s = 0.04
        hot = [rt.generate(QUESTION, **ask) for _ in range(2)]
        hot_correction = dict(rt.latency.corrections)
        reader.throttle_hold_s = 0.0  # the spell ends
        rt.runner.delay_s = 0.0
        after = rt.generate(QUESTION, **ask)
    key = next(iter(calm_correction))
    assert calm[0].device_state["key"] == "governor=powersave" and not calm[1].warnings
    assert hot[0].device_state["cpu_throttled"] is True and "slowdown=cpu:thermal_throttle" in hot[0].device_state["key"]
    assert any("device state changed" in w for w in hot[0].warnings) and not hot[1].warnings
    assert hot_correction[key] > 2 * calm_correction[key]
    assert any("device state changed" in w for w in after.warnings)
    # back in the calm state the calm correction is restored, then moved by one calm request
    assert rt.latency.corrections[key] < 1.5 * calm_correction[key], (calm_correction, hot_correction,
                                                                      rt.latency.corrections)
    assert after.to_dict()["device_state"]["key"] == "governor=powersave"
