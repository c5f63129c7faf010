"""reasoning-gym task sets: the rg: spec, generation, the saved copy, scoring by the verifier, calibration."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgert.answers import AnswerSpec
from edgert.bundle import Bundle
from edgert.calibrate import Grid, calibrate, progress_path, saved_task_set_path, task_set_for
from edgert.errors import UsageError
from edgert.tasks import Task, load_tasks, parse_tasks, score, task_set_name
from edgert.tasks import rg

ROOT = Path(__file__).resolve().parents[1]
needs_rg = pytest.mark.skipif(
    __import__("importlib").util.find_spec("reasoning_gym") is None, reason="reasoning-gym (edgert[tasks]) not installed")


def _jsonl(tasks):
    return "".join(json.dumps(t.to_json(), sort_keys=True) + "\n" for t in tasks)


# ------------------------------------------------------------------ the spec
@pytest.mark.parametrize("spec, name", [
    ("rg:chain_sum", "rg-chain_sum-seed0-size40"),
    ("rg:chain_sum:size=40,seed=0", "rg-chain_sum-seed0-size40"),
    ("rg:gsm_symbolic:seed=2,size=50", "rg-gsm_symbolic-seed2-size50"),
    ("rg:basic_arithmetic:seed=1,size=40,min_terms=2,max_terms=3",
     "rg-basic_arithmetic-max_terms=3-min_terms=2-seed1-size40"),
    ("rg:basic_arithmetic:allow_negation=False,format_style=natural",
     "rg-basic_arithmetic-allow_negation=false-format_style=natural-seed0-size40"),
    ("rg:gsm_symbolic:difficulty=1.0", "rg-gsm_symbolic-difficulty=1.0-seed0-size40"),
    ("rg:mix:seed=1,size=40", "rg-mix-seed1-size40"),
])
def test_a_spec_names_its_set_by_everything_that_changes_the_tasks(spec, name):
    assert task_set_name(spec) == name
    assert Path(f"{name}.jsonl").stem == name and os.sep not in name


@pytest.mark.parametrize("spec, message", [
    ("rg:", "expected rg:<dataset>[:key=value,...]"),
    ("rg:Chain_Sum", "the dataset named in lower case letters"),
    ("rg:chain_sum:seed=1:size=2", "one ':' between the dataset and its options"),
    ("rg:chain_sum:seed", "expected options as key=value separated by commas; found 'seed'"),
    ("rg:chain_sum:seed=1,", "expected options as key=value separated by commas; found ''"),
    ("rg:chain_sum:seed=1,seed=2", "expected each option once; found seed twice"),
    ("rg:chain_sum:seed=-1", "expected seed to be an integer from 0 to 2147483647; found '-1'"),
    ("rg:chain_sum:seed=1.5", "expected seed to be an integer from 0 to 2147483647; found '1.5'"),
    ("rg:chain_sum:size=0", "expected size to be an integer from 1 to 10000; found '0'"),
    ("rg:chain_sum:size=10001", "expected size to be an integer from 1 to 10000"),
    ("rg:chain_sum:x=a/b", "expected x to be a number, true/false or a word"),
    ("rg:mix:max_terms=2", "rg:mix takes only the options seed and size; found max_terms"),
])
def test_malformed_specs_are_refused_with_what_was_expected(spec, message):
    with pytest.raises(UsageError) as info:
        task_set_name(spec)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_without_reasoning_gym_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "reasoning_gym", None)  # makes ``import reasoning_gym`` fail
    with pytest.raises(UsageError, match=r"pip install 'edgert\[tasks\]'"):
        load_tasks("rg:chain_sum")


def test_edgert_embedded_never_imports_reasoning_gym():
    """An app importing the runtime, planning and reading a saved rg set needs no reasoning-gym."""
    saved = json.dumps({"id": "a", "prompt": "1 + 1 =", "answer": "2", "type": "number",
                        "source": "rg:chain_sum", "entry": {"question": "1 + 1 =", "answer": "2", "metadata": {}}})
    code = ("import sys, edgert, edgert.runtime, edgert.calibrate, edgert.serve.protocol, edgert.tasks as t\n"
            f"tasks = t.parse_tasks({saved!r})\n"
            "assert tasks[0].source == 'rg:chain_sum' and t.task_set_name('rg:mix') == 'rg-mix-seed0-size40'\n"
            "assert t.load_tasks('arithmetic').tasks\n"
            "print('reasoning_gym' in sys.modules)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT)] + sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------ real datasets
@needs_rg
@pytest.mark.parametrize("spec, message", [
    ("rg:chainsum", "expected a reasoning-gym dataset (or mix); found 'chainsum'; datasets: ab, "),
    ("rg:chain_sum:foo=1", "expected options of chain_sum among seed, size, min_terms (an integer)"),
    ("rg:chain_sum:min_terms=abc", "expected min_terms to be an integer; found 'abc'"),
    ("rg:basic_arithmetic:format_style=fancy", "expected format_style to be one of simple/natural; found 'fancy'"),
    ("rg:basic_arithmetic:operators=x", "found operators, which takes list[str]"),
    ("rg:chain_sum:min_terms=5,max_terms=2", "AssertionError: max_terms must be >= min_terms"),
])
def test_unknown_datasets_and_bad_options_are_refused(spec, message):
    with pytest.raises(UsageError) as info:
        load_tasks(spec)
    assert message in str(info.value) and "\n" not in str(info.value)


@needs_rg
def test_a_dataset_generates_the_same_tasks_for_a_seed_and_others_for_another():
    one = load_tasks("rg:chain_sum:seed=1,size=20")
    again = load_tasks("rg:chain_sum:seed=1,size=20")
    other = load_tasks("rg:chain_sum:seed=2,size=20")
    assert one.name == "rg-chain_sum-seed1-size20" == task_set_name("rg:chain_sum:seed=1,size=20")
    assert one.tasks == again.tasks
    assert len(one.test()) == 20 and len(one.shots()) == rg.SHOTS
    ids = [t.id for t in one.tasks]
    assert len(set(ids)) == len(ids) and ids[0] == "rg-chain_sum-seed1-000" and ids[-1] == "rg-chain_sum-seed1-shot2"
    assert not set(ids) & {t.id for t in other.tasks}
    # reasoning-gym seeds item i with seed + i; edgert's seeds must not be shifted copies of each other
    prompts = {t.prompt for t in one.tasks}
    assert len(prompts) == len(one.tasks) and not prompts & {t.prompt for t in other.tasks}
    for task in one.tasks:
        assert task.type == "number" and task.source == "rg:chain_sum" and task.answer == task.entry["answer"]
        assert task.prompt == task.entry["question"]
    # a longer set of the same seed starts with the same tasks
    assert load_tasks("rg:chain_sum:seed=1,size=25").test()[:20] == one.test()


@needs_rg
def test_options_reach_the_dataset_and_its_source():
    tasks = load_tasks("rg:chain_sum:seed=3,size=10,min_terms=4,max_terms=4").test()
    assert {t.source for t in tasks} == {"rg:chain_sum:max_terms=4,min_terms=4"}
    assert all(t.entry["metadata"]["num_terms"] == 4 and t.prompt.count(" + ") + t.prompt.count(" - ") == 3
               for t in tasks)
    assert tasks[0].id == "rg-chain_sum-max_terms=4-min_terms=4-seed3-000"


@needs_rg
def test_a_non_numeric_gold_answer_makes_a_text_task():
    tasks = load_tasks("rg:calendar_arithmetic:seed=1,size=12").test()
    kinds = {t.type for t in tasks}
    assert "text" in kinds
    for t in tasks:
        assert (t.type == "number") == t.answer.lstrip("-").isdigit()


@needs_rg
def test_the_mix_interleaves_its_parts_and_their_verifiers_take_edgerts_answers():
    mix = load_tasks("rg:mix:seed=1,size=48")
    assert mix.name == "rg-mix-seed1-size48"
    tests = mix.test()
    assert len(tests) == 48 and len(mix.shots()) == rg.SHOTS
    parts = [f"{p.dataset}-{p.tag}" for p in rg.MIX]
    assert [t.id.split("-seed")[0] for t in tests[:len(parts)]] == [f"rg-mix-{p}" for p in parts]
    assert {t.type for t in mix.tasks} == {"number"}
    assert len({t.id for t in mix.tasks}) == len(mix.tasks)
    other = load_tasks("rg:mix:seed=2,size=48").test()
    assert not {t.id for t in tests} & {t.id for t in other}
    # the easy parts draw from small spaces (one-digit sums), so a few questions recur by chance
    assert sum(a.prompt == b.prompt for a, b in zip(tests, other)) <= len(tests) // 4
    extract = AnswerSpec(kind="number").extract
    for task in mix.tasks:  # the verifier accepts the form edgert's extraction gives a right answer
        for said in (f"The answer is {task.answer}.", f"{task.answer}.0", f"So it is {int(task.answer):,}."):
            assert score(task, extract(said)), (task.id, said)
        assert not score(task, str(int(task.answer) + 1))


# ------------------------------------------------------------------ scoring and the saved copy
@needs_rg
def test_score_uses_the_verifier_and_partial_credit_is_wrong():
    task = next(t for t in load_tasks("rg:basic_arithmetic:seed=4,size=30").test() if not t.answer.startswith("-"))
    assert score(task, task.answer) and not score(task, None)
    padded = "1" + task.answer  # reasoning-gym's default verifier gives len(gold)/len(answer) for this
    assert 0 < rg.verify(task.source, task.entry, padded) < 1 and not score(task, padded)
    assert not score(task, str(int(task.answer) + 1))
    assert rg.verify(task.source, task.entry, None) == 0.0


@needs_rg
def test_the_verifier_decides_not_the_gold_field():
    task = load_tasks("rg:chain_sum:seed=5,size=3").test()[0]
    wrong_gold = Task(**{**task.__dict__, "answer": str(int(task.answer) + 1)})
    assert score(wrong_gold, task.answer) and not score(wrong_gold, wrong_gold.answer)
    plain = Task("p", "What is 2 + 2?", "4", "number")  # no source: answers.is_correct
    assert score(plain, "4") and not score(plain, "5") and not score(plain, None)


@needs_rg
def test_a_verifier_that_fails_on_odd_output_scores_it_wrong(monkeypatch):
    task = load_tasks("rg:chain_sum:seed=5,size=3").test()[0]

    class Broken:
        def score_answer(self, answer, entry):
            raise ValueError("odd output")

    monkeypatch.setitem(rg._VERIFIERS, task.source, Broken())
    assert not score(task, task.answer)


@needs_rg
def test_a_saved_copy_parses_back_to_the_same_tasks_and_still_scores():
    tasks = load_tasks("rg:mix:seed=9,size=10").tasks
    back = parse_tasks(_jsonl(tasks), "copy.jsonl")
    assert back == tasks
    assert all(score(t, t.answer) for t in back)
    assert all(not score(t, str(int(t.answer) - 1)) for t in back)


@pytest.mark.parametrize("change, message", [
    ({"entry": None}, "expected 'source' and 'entry' together; found only source"),
    ({"source": None}, "expected 'source' and 'entry' together; found only entry"),
    ({"source": "chain_sum"}, "expected 'source' to be rg:<dataset>"),
    ({"source": "rg:mix"}, "without seed or size"),
    ({"source": "rg:chain_sum:seed=1"}, "without seed or size"),
    ({"entry": ["2"]}, "expected 'entry' to be the source's item, an object with an 'answer'"),
    ({"entry": {"question": "1 + 1 ="}}, "expected 'entry' to be the source's item, an object with an 'answer'"),
])
def test_a_bad_source_or_entry_in_a_file_is_refused(change, message):
    record = {"id": "a", "prompt": "1 + 1 =", "answer": "2", "type": "number", "source": "rg:chain_sum",
              "entry": {"question": "1 + 1 =", "answer": "2", "metadata": {}}}
    record = {k: v for k, v in {**record, **change}.items() if v is not None}
    with pytest.raises(UsageError) as info:
        parse_tasks(json.dumps(record), "f.jsonl")
    assert str(info.value).startswith("f.jsonl:1: ") and message in str(info.value)


# ------------------------------------------------------------------ calibration end to end
@needs_rg
def test_calibration_on_an_rg_set_scores_with_the_verifier_and_saves_a_usable_copy(smollm2_bundle, tmp_path, monkeypatch):
    root = tmp_path / "bundle"
    shutil.copytree(smollm2_bundle, root)
    bundle = Bundle.open(root)
    tasks = load_tasks("rg:mix:seed=3,size=3")
    verified = []
    real_verify = rg.verify
    monkeypatch.setattr(rg, "verify", lambda source, entry, answer: verified.append(source) or real_verify(source, entry, answer))
    grid = Grid(answer_tokens=(12,), think_tokens=(4,), ns=(2,), strategies=("greedy",))
    rows = calibrate(bundle, tasks, grid=grid, threads=2)
    assert [(r["task_set"], r["strategy"], r["total"]) for r in rows] == [("rg-mix-seed3-size3", "greedy", 3)]
    assert sorted(verified) == sorted(t.source for t in tasks.test())  # one verdict per task, by its verifier
    by_id = {t.id: t for t in tasks.tasks}
    records = [json.loads(line) for line in progress_path(bundle, tasks.name).read_text().splitlines()]
    assert {r["task"] for r in records} == {t.id for t in tasks.test()}
    for record in records:
        (result,) = record["results"].values()
        task = by_id[record["task"]]
        assert result["correct"] == (real_verify(task.source, task.entry, result["answer"]) >= 1.0)
    assert rows[0]["correct"] == sum(next(iter(r["results"].values()))["correct"] for r in records)
    # planning finds the set by its name alone, from the saved copy, verifier data included
    assert saved_task_set_path(bundle, tasks.name).is_file()
    assert task_set_for(Bundle.open(root), tasks.name).tasks == tasks.tasks
    assert task_set_for(Bundle.open(root), "rg:mix:seed=3,size=3").tasks == tasks.tasks
    # ... and by its spec, on a device without reasoning-gym
    monkeypatch.setitem(sys.modules, "reasoning_gym", None)
    assert task_set_for(Bundle.open(root), "rg:mix:seed=3,size=3").tasks == tasks.tasks
    with pytest.raises(UsageError, match="edgert\\[tasks\\]"):  # a set it was not calibrated on must be generated
        task_set_for(Bundle.open(root), "rg:mix:seed=4,size=3")
