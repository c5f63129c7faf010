"""Calibration on the real SmolLM2 bundle, and the calibrate / plan / run commands."""

import json
import shutil

import pytest
from click.testing import CliRunner

from edgert.bundle import Bundle
from edgert.calibrate import Grid, calibrate, progress_path, run_task, task_seed
from edgert.stats import wilson_interval
from edgert.runtime import Runtime
from edgert.strategies import Config
from edgert.tasks import load_tasks

TASKS = [
    {"id": "t1", "prompt": "Ann has 2 cats and gets 3 more. How many cats does Ann have?", "answer": "5", "type": "number"},
    {"id": "t2", "prompt": "There are 9 birds. 4 fly away. How many birds are left?", "answer": "5", "type": "number"},
    {"id": "t3", "prompt": "What is 6 plus 1?", "answer": "7", "type": "number"},
]
GRID = Grid(answer_tokens=(6, 20), think_tokens=(12,), ns=(2, 3))


@pytest.fixture()
def bundle_copy(smollm2_bundle, tmp_path):
    root = tmp_path / "bundle"
    shutil.copytree(smollm2_bundle, root)
    return root


@pytest.fixture()
def task_file(tmp_path):
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps(t) + "\n" for t in TASKS))
    return path


def test_calibration_stores_a_table_and_resumes(bundle_copy, task_file, monkeypatch):
    bundle = Bundle.open(bundle_copy)
    tasks = load_tasks(task_file)
    seen = []
    rows = calibrate(bundle, tasks, grid=GRID, threads=2, progress=lambda label, done, total: seen.append((done, total)))
    variant = bundle.variant().name
    assert {r["key"] for r in rows} == {c.key for c in GRID.configs(variant)}
    for r in rows:
        assert r["total"] == 3 and 0 <= r["correct"] <= 3
        assert (r["ci_low"], r["ci_high"]) == tuple(round(x, 4) for x in wilson_interval(r["correct"], 3))
    assert seen[-1] == (3, 3)
    stored = Bundle.open(bundle_copy).manifest.accuracy_table
    assert stored == rows
    for r in rows:  # decode steps used, as a share of the worst case, for the planner
        assert 0 < r["steps_share_p95"] <= 1 and r["steps_p95"] <= r["worst_steps"]
    greedy = next(r for r in rows if r["strategy"] == "greedy" and r["answer_tokens"] == 20)
    assert greedy["worst_steps"] == 20
    esc = {r["n"]: r["mean_samples"] for r in rows if r["strategy"] == "esc" and r["answer_tokens"] == 20}
    assert esc[3] <= 3 and esc[2] == 2

    # a second run finds every task done and generates nothing
    import edgert.calibrate as module

    monkeypatch.setattr(module, "run_task", lambda *a, **k: pytest.fail("resumed calibration ran a task again"))
    again = calibrate(Bundle.open(bundle_copy), tasks, grid=GRID, threads=2)
    assert again == rows


def test_a_torn_progress_line_is_ignored_and_redone(bundle_copy, task_file):
    bundle = Bundle.open(bundle_copy)
    tasks = load_tasks(task_file)
    grid = Grid(answer_tokens=(6,), think_tokens=(4,), ns=(2,), strategies=("greedy",))
    calibrate(bundle, tasks, grid=grid, threads=2)
    path = progress_path(bundle, tasks.name)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2]) + "\n" + lines[2][: len(lines[2]) // 2])  # killed mid-write
    rows = calibrate(Bundle.open(bundle_copy), tasks, grid=grid, threads=2)
    assert rows[0]["total"] == 3


def test_values_read_off_longer_runs_equal_real_runs(bundle_copy, task_file):
    """Calibration reads short budgets and small N off the longest run; the real strategies
    with those settings must give the same answers."""
    bundle = Bundle.open(bundle_copy)
    tasks = load_tasks(task_file)
    variant = bundle.variant().name
    task = tasks.test()[0]
    with Runtime(bundle, n_threads=2) as rt:
        rt.load()
        results = run_task(rt.runner, variant, task, tasks, GRID, seed=0)
        greedy6 = rt.generate(task.prompt, strategy="greedy", max_tokens=6, task_set=str(task_file))
        sc2 = rt.generate(task.prompt, strategy="sc", n=2, max_tokens=20, task_set=str(task_file),
                          seed=task_seed(task.id, 0))
    assert results[Config(variant, "greedy", 6).key]["answer"] == greedy6.answer
    assert results[Config(variant, "sc", 20, n=2).key]["answer"] == sc2.answer


def test_calibrate_and_plan_commands(bundle_copy, task_file, tmp_path):
    from edgert.cli.main import main
    from test_runtime_adaptive import synthetic_profile_for

    runner = CliRunner()
    out = runner.invoke(main, ["calibrate", str(bundle_copy), "--tasks", str(task_file), "--answer-tokens", "6",
                               "--think-tokens", "6", "--n", "2", "--threads", "2", "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    assert {r["strategy"] for r in rows} == {"greedy", "sc", "esc", "bon", "bf"}

    profile = synthetic_profile_for(bundle_copy)
    profile_path = tmp_path / "profile.json"
    profile.save(profile_path)
    png = tmp_path / "pareto.png"
    out = runner.invoke(main, ["plan", str(bundle_copy), "--device", str(profile_path), "--deadline", "1.5s",
                               "--power", "10W", "--plot", str(png)])
    assert out.exit_code == 0, out.output
    assert "choice:" in out.stdout and "Pareto frontier" in out.stdout
    assert png.stat().st_size > 10_000
    out = runner.invoke(main, ["plan", str(bundle_copy), "--device", str(profile_path), "--deadline", "1.5s", "--json",
                               "--no-plot"])
    data = json.loads(out.stdout)
    assert data["choice"]["threads"] in (1, 2) and len(data["candidates"]) == 2 * len(rows)


@pytest.mark.parametrize("args,message", [
    (["calibrate", "{bundle}", "--tasks", "{missing}"], "task"),
    (["calibrate", "{bundle}", "--n", "2,x"], "--n: expected comma-separated integers"),
    (["plan", "{bundle}", "--device", "{missing}", "--deadline", "1s"], "device profile not found"),
    (["run", "{bundle}", "hi", "--power", "10W"], "need --strategy"),
    (["run", "{bundle}", "hi", "--strategy", "auto"], "--strategy auto needs --profile"),
])
def test_bad_arguments_get_one_line_errors(bundle_copy, tmp_path, args, message):
    from edgert.cli.main import main

    argv = [a.format(bundle=bundle_copy, missing=tmp_path / "missing.json") for a in args]
    out = CliRunner().invoke(main, argv)
    assert out.exit_code != 0
    assert message in out.output and len(out.output.strip().splitlines()) == 1, out.output


def test_plan_without_accuracy_table_says_what_to_run(bundle_copy, tmp_path):
    from edgert.cli.main import main
    from test_runtime_adaptive import synthetic_profile_for

    profile_path = tmp_path / "p.json"
    synthetic_profile_for(bundle_copy).save(profile_path)
    out = CliRunner().invoke(main, ["plan", str(bundle_copy), "--device", str(profile_path), "--deadline", "1s"])
    assert out.exit_code != 0 and "edgert calibrate" in out.output


def test_a_users_own_task_set_calibrates_and_plans_by_file_or_by_name(bundle_copy, task_file, tmp_path):
    """calibrate --tasks my.jsonl stores the task set as 'my'; planning then finds it by the
    file (named by its stem, as calibration names it) and by the name alone."""
    from edgert.cli.main import main
    from test_runtime_adaptive import synthetic_profile_for

    mine = tmp_path / "mine.jsonl"
    mine.write_text(task_file.read_text())
    runner = CliRunner()
    out = runner.invoke(main, ["calibrate", str(bundle_copy), "--tasks", str(mine), "--answer-tokens", "6",
                               "--think-tokens", "6", "--n", "2", "--threads", "2", "--json"])
    assert out.exit_code == 0, out.output
    assert {r["task_set"] for r in json.loads(out.stdout)} == {"mine"}
    profile_path = tmp_path / "profile.json"
    synthetic_profile_for(bundle_copy).save(profile_path)
    mine_moved = tmp_path / "elsewhere"  # the name works without the file
    mine.rename(mine_moved)
    for task_set in ("mine", str(task_file.parent / "mine.jsonl")):
        if task_set.endswith(".jsonl"):
            mine_moved.rename(task_set)
        out = runner.invoke(main, ["run", str(bundle_copy), TASKS[0]["prompt"], "--strategy", "auto", "--profile",
                                   str(profile_path), "--deadline", "5s", "--task-set", task_set, "--json"])
        assert out.exit_code == 0, out.output
        result = json.loads(out.stdout)
        assert result["plan"]["feasible"] and result["plan"]["expected_accuracy"] is not None
    for task_set in ("mine", str(task_file.parent / "mine.jsonl")):  # edgert plan takes either too
        out = runner.invoke(main, ["plan", str(bundle_copy), "--device", str(profile_path), "--deadline", "5s",
                                   "--task-set", task_set, "--json", "--no-plot"])
        assert out.exit_code == 0, out.output
        assert json.loads(out.stdout)["feasible"]
    with Runtime(bundle_copy, profile=profile_path, n_threads=2) as rt:
        r = rt.generate(TASKS[1]["prompt"], strategy="auto", deadline_s=5, task_set="mine")
    assert r.config is not None and r.plan["feasible"]
    with pytest.raises(Exception, match="no such file"):
        Runtime(bundle_copy, profile=profile_path).generate("hi", strategy="auto", deadline_s=5, task_set="theirs")


def test_records_keep_confidence_signals_and_temperatures_are_configurations(bundle_copy, task_file):
    bundle = Bundle.open(bundle_copy)
    grid = Grid(answer_tokens=(8,), think_tokens=(4,), ns=(3,), strategies=("greedy", "sc"), temperatures=(0.3, 0.9))
    rows = calibrate(bundle, load_tasks(task_file), grid=grid, threads=2)
    variant = bundle.variant().name
    sc = sorted(r["key"] for r in rows if r["strategy"] == "sc")
    assert sc == [f"{variant}|sc|n3|t0|a8|T0.3", f"{variant}|sc|n3|t0|a8|T0.9"]
    assert {r["temperature"] for r in rows if r["strategy"] == "sc"} == {0.3, 0.9}
    records = [json.loads(line) for line in progress_path(bundle, "tasks").read_text().splitlines()]
    assert len(records) == 3 and all(r["v"] == 2 for r in records)
    for record in records:
        greedy = record["results"][f"{variant}|greedy|n1|t0|a8"]
        signals = greedy["signals"]
        if greedy["answer"] is not None:  # an answer has a log-probability and a first-token margin
            assert signals["lp_min"] <= signals["lp_mean"] <= 0 and signals["margin"] >= 0
            assert signals["agreement"] is None  # one sample
        for key in sc:
            agreement = record["results"][key]["signals"]["agreement"]
            assert agreement is None or agreement in (1 / 3, 2 / 3, 1.0) or round(agreement, 4) in (0.3333, 0.6667)
    # the two temperatures draw different samples (same seed): their answers or signals differ somewhere
    assert any(r["results"][sc[0]]["signals"] != r["results"][sc[1]]["signals"] for r in records)
    with pytest.raises(Exception, match="temperature"):
        Config(variant, "greedy", 8, temperature=0.5)
    assert Config.from_key(sc[0]).temperature == 0.3 and Config.from_key(sc[0]).key == sc[0]
