"""The demo's orchestration (edgert.demo) with fake measurements, and edgert's cache root.

The real demo runs real models for minutes (``edgert demo``); here packing is real (tiny GGUF
files), while profiling, calibration and the runtime are fakes that record their calls.
"""

import sys
import types
from pathlib import Path

import pytest

from edgert import demo, models
from edgert.bundle import Bundle
from edgert.errors import UsageError
from edgert.paths import cache_dir
from edgert.profiler.profile import DeviceProfile
from edgert.runners.types import GenerationResult
from edgert.runtime import RuntimeResult
from edgert.strategies import Config

from gguf_factory import default_metadata, write_gguf
from test_planner import _variant


def fake_profile(bundle: Bundle) -> DeviceProfile:
    variants = {}
    for v in bundle.variants:
        vp = _variant(v.name, 100_000_000)
        vp.sha256 = v.sha256
        vp.fit_error["decode_held_out"]["within_10pct"] = 0.9
        variants[v.name] = vp
    return DeviceProfile(device={"kind": "cpu", "name": "fake"}, peak_flops=100e9, bandwidth_bytes_per_s=20e9,
                         variants=variants, sensor={"provenance": "estimated"})


class FakeRuntime:
    """Answers every prompt "7" with a greedy configuration; infeasible plans when told so."""

    feasible = True
    calls = []

    def __init__(self, bundle, n_threads=None, profile=None):
        self.bundle, self.profile = bundle, profile

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def preload(self):
        return {}

    def generate(self, prompt, **kwargs):
        FakeRuntime.calls.append(kwargs)
        variant = self.bundle.variants[0].name
        generation = GenerationResult("7", "stop", 10, 2, 5.0, [1.0, 1.0], 8.0)
        return RuntimeResult(text="7", variant=variant, finish_reason="stop", latency_ms=8.0, load_ms=0.0,
                             generation=generation, deadline_s=kwargs["deadline_s"], answer="7",
                             config=Config(variant, "greedy", 24).to_dict(),
                             plan={"feasible": FakeRuntime.feasible, "reason": "test"}, energy_j=0.5, threads=2)


@pytest.fixture()
def fakes(tmp_path, monkeypatch):
    """Tiny GGUF files stand in for the packaged models; profiling, calibration and the runtime are fakes."""
    files = {name: write_gguf(tmp_path / f"{name}.gguf", metadata=default_metadata(name=name))
             for name in demo.VARIANTS}
    calls = {"profile": 0, "calibrate": 0}

    def profile_device(bundle, quick, threads, progress):
        calls["profile"] += 1
        if progress:
            progress("microbenchmarks", 0, 1)
        return fake_profile(bundle)

    def calibrate(bundle, tasks, grid, limit, threads, progress):
        calls["calibrate"] += 1
        assert tasks.name == demo.load_tasks(demo.TASK_SET).name and limit == demo.CALIBRATION_TASKS
        if progress:
            progress("calibrating", 0, 1)
        return [{"variant": v.name, "strategy": "greedy", "n": 1, "think_tokens": 0, "answer_tokens": 24,
                 "accuracy": 0.5, "ci_low": 0.2, "ci_high": 0.8, "total": 12, "mean_samples": 1.0, "mean_tokens": 3.0}
                for v in bundle.variants]

    monkeypatch.setattr(demo, "packaged_model_path", lambda name: files[name])
    monkeypatch.setattr(demo, "profile_device", profile_device)
    monkeypatch.setattr(demo, "calibrate", calibrate)
    monkeypatch.setattr(demo, "Runtime", FakeRuntime)
    monkeypatch.setattr(FakeRuntime, "feasible", True)
    monkeypatch.setattr(FakeRuntime, "calls", [])
    return calls


def test_demo_packs_profiles_calibrates_and_answers_in_order(tmp_path, fakes, capsys):
    events, reports = [], []
    bundle_dir = tmp_path / "demo-bundle"
    result = demo.run_demo(bundle_dir, deadlines_s=(0.5, 1.5), power_w=8.0, threads=2,
                           progress=lambda *a: reports.append(a), on_event=events.append)
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["Packing", "BundleReady", "Profiling", "ProfileReady", "Calibrating", "Calibrated", "Answering"] + \
        ["DemoAnswer"] * 5
    assert [e.step for e in events] == [1, 1, 2, 2, 3, 3, 4] + [4] * 5
    assert [m.name for m in events[0].models] == list(demo.VARIANTS)
    assert events[2].cached is False and fakes == {"profile": 1, "calibrate": 1}
    assert {v.name for v in result.bundle.variants} == set(demo.VARIANTS.values())
    assert result.profile_path == tmp_path / "demo-bundle-profile.json" and result.profile_path.exists()
    # two questions under each deadline alone, then one under the last with the power limit; the planner chooses
    assert [(a.number, a.deadline_s, a.power_w) for a in result.answers] == \
        [(1, 0.5, None), (2, 0.5, None), (3, 1.5, None), (4, 1.5, None), (5, 1.5, 8.0)]
    tasks = demo.load_tasks(demo.TASK_SET)
    assert all(c["strategy"] == "auto" and c["task_set"] == tasks.name for c in FakeRuntime.calls)
    held_out = tasks.test()[demo.CALIBRATION_TASKS:]
    assert [a.task.prompt for a in result.answers] == [t.prompt for t in held_out[:5]]
    assert [c["answer_type"] for c in FakeRuntime.calls] == [t.type for t in held_out[:5]]
    answer = result.answers[0]
    assert answer.feasible and answer.choice == f"{answer.result.variant} greedy answer 24 2 threads"
    assert answer.correct == (answer.task.answer == "7")
    assert not result.energy_measured
    assert ("copy smollm2-135m-q4_1" in {r[0] for r in reports}) and ("calibrating", 0, 1) in reports
    assert capsys.readouterr() == ("", "")  # the library never prints


def test_second_run_reuses_bundle_and_profile_unless_told(tmp_path, fakes):
    bundle_dir = tmp_path / "b"
    demo.run_demo(bundle_dir, small_only=True)
    events = []
    demo.run_demo(bundle_dir, small_only=True, on_event=events.append)
    assert not any(isinstance(e, demo.Packing) for e in events)
    assert next(e for e in events if isinstance(e, demo.Profiling)).cached is True
    assert fakes["profile"] == 1 and fakes["calibrate"] == 2  # calibration resumes by itself
    demo.run_demo(bundle_dir, small_only=True, reprofile=True)
    assert fakes["profile"] == 2
    # the bundle changes (more variants): the cached profile no longer matches, so it is measured again
    events = []
    demo.run_demo(bundle_dir, on_event=events.append)
    assert [m.name for m in next(e for e in events if isinstance(e, demo.Packing)).models] == \
        ["gemma-3-270m", "qwen2.5-coder-0.5b-instruct"]
    assert next(e for e in events if isinstance(e, demo.Profiling)).cached is False and fakes["profile"] == 3


def test_profile_matches_only_the_variants_it_measured(tmp_path, fakes):
    result = demo.run_demo(tmp_path / "b")
    bundle, profile = result.bundle, result.profile
    assert profile.matches(bundle)
    name = bundle.variants[0].name
    profile.variants[name].sha256 = "0" * 64  # the artifact changed since
    assert not profile.matches(bundle)
    assert not DeviceProfile(device={}, peak_flops=1, bandwidth_bytes_per_s=1, variants={}).matches(bundle)
    smaller = fake_profile(bundle)
    del smaller.variants[name]
    assert not smaller.matches(bundle)


def test_infeasible_plans_are_flagged_per_answer(tmp_path, fakes, monkeypatch):
    monkeypatch.setattr(FakeRuntime, "feasible", False)
    result = demo.run_demo(tmp_path / "b", small_only=True, deadlines_s=(1.0,))
    assert [a.feasible for a in result.answers] == [False, False, False]


def test_an_answer_says_whether_its_cascade_escalated(tmp_path, fakes):
    answer = demo.run_demo(tmp_path / "b", small_only=True, deadlines_s=(1.0,)).answers[0]
    first, then = "s|greedy|n1|t0|a24", "q|bf|n1|t48|a24"
    answer.result.stages = [{"config": first, "decision": "confident"}]
    assert answer.choice == "s greedy answer 24; sure, not escalated"
    answer.result.stages = [{"config": first, "decision": "escalated"}, {"config": then, "decision": "answered"}]
    assert answer.choice == "s greedy answer 24; unsure, escalated to q bf think 48 answer 24"


def test_demo_needs_a_deadline():
    with pytest.raises(UsageError, match="at least one deadline"):
        demo.requests_for([], 8.0)


# ---------------------------------------------------------------------- cache root
def test_cache_root_honours_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "edgert"
    assert demo.default_bundle_dir() == tmp_path / "xdg" / "edgert" / "bundles" / "edgert-demo"
    assert demo.default_bundle_dir(small_only=True).name == "edgert-demo-small"
    for unset in ("", "relative/dir"):  # the XDG spec: empty or relative means the default
        monkeypatch.setenv("XDG_CACHE_HOME", unset)
        assert cache_dir("models") == Path.home() / ".cache" / "edgert" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "edgert"


def test_assembled_models_go_to_the_cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    package = types.ModuleType("fake_chunk_package")
    package.assemble = lambda path, overwrite: Path(path).write_bytes(b"GGUF")
    monkeypatch.setitem(sys.modules, "fake_chunk_package", package)
    model = models.PackagedModel("fake", "fake_chunk_package", "fake-chunk-package", "fake.gguf", "a fake", assembled=True)
    path = models._assembled(model, "hint")
    assert path == tmp_path / "xdg" / "edgert" / "models" / "fake.gguf" and path.read_bytes() == b"GGUF"
