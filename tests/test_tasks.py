"""Task sets: the shipped files, their generators, strict loading, and prompt formatting."""

import json
from importlib import resources

import pytest

from edgert.answers import extract_answer, is_correct
from edgert.errors import UsageError
from edgert.tasks import Task, TaskSet, builtin_task_sets, format_prompt, load_tasks
from edgert.tasks.generate import GENERATORS, main, to_jsonl


def test_builtin_sets_load_with_shots_and_tests():
    assert builtin_task_sets() == ["arithmetic", "facts"]
    for name, kind in (("arithmetic", "number"), ("facts", "choice")):
        tasks = load_tasks(name)
        assert isinstance(tasks, TaskSet) and tasks.name == name
        assert len(tasks.shots()) == 4
        assert 140 <= len(tasks.test()) <= 160
        assert {t.type for t in tasks.tasks} == {kind}
        assert len({t.id for t in tasks.tasks}) == len(tasks.tasks)
        assert len({t.prompt for t in tasks.tasks}) == len(tasks.tasks)


def test_facts_have_four_distinct_choices_and_balanced_letters():
    tests = load_tasks("facts").test()
    assert all(len(t.choices) == 4 and len(set(t.choices)) == 4 for t in tests)
    counts = {letter: sum(t.answer == letter for t in tests) for letter in "ABCD"}
    assert max(counts.values()) - min(counts.values()) <= 1


def test_arithmetic_answers_are_small_non_negative_integers():
    for task in load_tasks("arithmetic").tasks:
        assert task.answer.isdigit() and 0 <= int(task.answer) <= 30


def test_some_spot_checked_facts():
    by_prompt = {t.prompt: t.choices["ABCD".index(t.answer)] for t in load_tasks("facts").tasks}
    known = {
        "What is the capital of France?": "Paris",
        "What is the capital of Australia?": "Canberra",
        "Which planet is the largest in our solar system?": "Jupiter",
        "What kind of animal is a whale?": "mammal",
        "What is the chemical symbol for gold?": "Au",
        "What is the opposite of dead?": "alive",
    }
    checked = [prompt for prompt in known if prompt in by_prompt]
    assert checked, "none of the spot checks is in the set"
    for prompt in checked:
        assert by_prompt[prompt] == known[prompt]


def test_generator_reproduces_the_shipped_files_exactly(tmp_path):
    main(["--out-dir", str(tmp_path), "--seed", "0"])
    package = resources.files("edgert.tasks")
    for name in builtin_task_sets():
        assert (tmp_path / f"{name}.jsonl").read_bytes() == package.joinpath(f"{name}.jsonl").read_bytes()


def test_other_seeds_give_other_tasks():
    for generate in GENERATORS.values():
        assert to_jsonl(generate(1)) != to_jsonl(generate(0))
        assert to_jsonl(generate(1)) == to_jsonl(generate(1))


def _write(tmp_path, *records, name="tasks.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return path


GOOD = {"id": "t1", "prompt": "What is 2 + 2?", "answer": "4", "type": "number"}
CHOICE = {"id": "c1", "prompt": "Capital of France?", "answer": "B", "type": "choice", "choices": ["Rome", "Paris"]}


def test_load_a_jsonl_file(tmp_path):
    path = _write(
        tmp_path,
        GOOD,
        "",
        {**CHOICE, "answer": "b", "split": "shot"},
        {"id": "r1", "prompt": "Code?", "answer": "42", "type": "regex", "pattern": r"(\d+)"},
        {"id": "n2", "prompt": "Half of 9?", "answer": 4.50, "type": "number"},
    )
    tasks = load_tasks(path)
    assert tasks.name == "tasks"
    assert [t.id for t in tasks.test()] == ["t1", "r1", "n2"]
    assert tasks.shots() == [Task("c1", "Capital of France?", "B", "choice", ("Rome", "Paris"), None, "shot")]
    assert tasks.tasks[-1].answer == "4.5"
    assert load_tasks(str(path)).tasks == tasks.tasks


@pytest.mark.parametrize(
    "record, message",
    [
        ("{not json", r"tasks.jsonl:2: expected a JSON object; found invalid JSON"),
        ("[1, 2]", r"tasks.jsonl:2: expected a JSON object; found list"),
        ({"id": "x", "prompt": "p"}, r"tasks.jsonl:2: expected keys id, prompt, answer, type; missing answer, type"),
        ({**GOOD, "id": "x", "hint": "h"}, r"tasks.jsonl:2: expected only the keys .*; found unknown hint"),
        ({**GOOD, "id": "x", "type": "int"}, r"tasks.jsonl:2: expected 'type' to be one of number, choice, text, regex; found \"int\""),
        ({**GOOD, "id": ""}, r"tasks.jsonl:2: expected 'id' to be a non-empty string"),
        ({**GOOD, "id": "x", "prompt": 3}, r"tasks.jsonl:2: expected 'prompt' to be a non-empty string; found 3"),
        ({**GOOD, "id": "x", "answer": "a few"}, r"expected 'answer' to be a number for a number task; found \"a few\""),
        ({**GOOD, "id": "x", "answer": True}, r"expected 'answer' to be a non-empty string; found true"),
        ({**GOOD}, r"tasks.jsonl:2: expected a unique id; found 't1' again \(first on line 1\)"),
        ({**GOOD, "id": "x", "split": "train"}, r"expected 'split' to be one of test, shot; found \"train\""),
        ({**CHOICE, "answer": "C"}, r"tasks.jsonl:2: expected 'answer' to be one of the letters A, B; found \"C\""),
        ({**CHOICE, "answer": "Paris"}, r"expected 'answer' to be one of the letters A, B; found \"Paris\""),
        ({**CHOICE, "choices": ["Paris"]}, r"expected 2 to 26 'choices' for a choice task; found 1"),
        ({**CHOICE, "choices": "AB"}, r"expected 'choices' to be a list of non-empty strings"),
        ({**CHOICE, "choices": ["Rome", ""]}, r"expected 'choices' to be a list of non-empty strings"),
        ({**GOOD, "id": "x", "choices": ["a", "b"]}, r"expected 'choices' only on choice tasks; found them on a number task"),
        ({**GOOD, "id": "x", "type": "regex"}, r"expected a 'pattern' \(regular expression\) for a regex task; found null"),
        ({**GOOD, "id": "x", "type": "regex", "pattern": "("}, r"expected 'pattern' to be a valid regular expression"),
        ({**GOOD, "id": "x", "pattern": "x"}, r"expected 'pattern' only on regex tasks"),
    ],
)
def test_load_rejects_bad_lines_with_one_line_messages(tmp_path, record, message):
    path = _write(tmp_path, GOOD, record)
    with pytest.raises(UsageError, match=message) as info:
        load_tasks(path)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(str(path))


def test_load_rejects_missing_and_empty_sources(tmp_path):
    with pytest.raises(UsageError, match=r"one of arithmetic, facts, a JSONL file or rg:<dataset>\[:key=value,\.\.\.\] .*; found 'nope' \(no such file\)"):
        load_tasks("nope")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    with pytest.raises(UsageError, match=r"empty.jsonl: expected at least one task"):
        load_tasks(empty)
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(UsageError, match="cannot read the task file as UTF-8 text"):
        load_tasks(binary)


NUMBER_TASK = Task("a1", "Tom has 3 apples and buys 4 more. How many apples does Tom have?", "7", "number")
NUMBER_SHOT = Task("s1", "Ann has 2 pens and buys 1 more. How many pens does Ann have?", "3", "number", split="shot")
CHOICE_TASK = Task("c1", "What is the capital of France?", "B", "choice", ("London", "Paris", "Rome", "Berlin"))
CHOICE_SHOT = Task("c0", "What kind of animal is a dog?", "A", "choice", ("mammal", "bird", "fish", "reptile"), split="shot")


def test_chat_prompt_is_question_options_and_instruction():
    assert format_prompt(NUMBER_TASK, chat=True) == NUMBER_TASK.prompt + "\nAnswer with the number only."
    assert format_prompt(CHOICE_TASK, chat=True) == (
        "What is the capital of France?\n\nOptions:\nA) London\nB) Paris\nC) Rome\nD) Berlin\n\n"
        "Reply with the letter of the correct option."
    )


def test_chat_prompt_with_shots_shows_worked_examples_first():
    prompt = format_prompt(CHOICE_TASK, chat=True, shots=[CHOICE_SHOT])
    assert prompt.index("What kind of animal is a dog?") < prompt.index("Answer: A") < prompt.index("capital of France")
    assert prompt.endswith("Reply with the letter of the correct option.")


def test_few_shot_prompt_for_a_base_model():
    prompt = format_prompt(NUMBER_TASK, chat=False, shots=[NUMBER_SHOT])
    assert prompt == f"Question: {NUMBER_SHOT.prompt}\nAnswer: 3\n\nQuestion: {NUMBER_TASK.prompt}\nAnswer:"
    prompt = format_prompt(CHOICE_TASK, chat=False, shots=[CHOICE_SHOT])
    assert prompt == (
        "Question: What kind of animal is a dog?\nA) mammal\nB) bird\nC) fish\nD) reptile\nAnswer: A\n\n"
        "Question: What is the capital of France?\nA) London\nB) Paris\nC) Rome\nD) Berlin\nAnswer:"
    )
    assert format_prompt(NUMBER_TASK, chat=False) == f"Question: {NUMBER_TASK.prompt}\nAnswer:"


def test_format_prompt_rejects_a_non_task():
    with pytest.raises(UsageError, match="expected a Task"):
        format_prompt({"prompt": "hi"}, chat=True)


def test_shipped_gold_answers_score_as_correct_through_extraction():
    for name in builtin_task_sets():
        for task in load_tasks(name).tasks:
            output = f"The answer is {task.answer}."
            predicted = extract_answer(output, task.type, choices=task.choices or None, pattern=task.pattern)
            assert is_correct(predicted, task.answer, task.type), task.id
            if task.choices:
                option = task.choices["ABCD".index(task.answer)]
                assert extract_answer(option, "choice", choices=task.choices) == task.answer, task.id


def test_lines_without_ids_are_numbered_by_file_and_line(tmp_path):
    no_id = {k: v for k, v in GOOD.items() if k != "id"}
    path = _write(tmp_path, no_id, "", {**no_id, "prompt": "What is 3 + 3?", "answer": "6"}, GOOD, name="my.jsonl")
    tasks = load_tasks(path)
    assert tasks.name == "my"
    assert [t.id for t in tasks.tasks] == ["my-1", "my-3", "t1"]  # the line number: stable across loads
    assert [t.id for t in load_tasks(path).tasks] == ["my-1", "my-3", "t1"]
    assert tasks.tasks[1].answer == "6" and tasks.tasks[1].to_json()["id"] == "my-3"


def test_numbered_ids_still_must_be_unique_and_other_errors_stay(tmp_path):
    no_id = {k: v for k, v in GOOD.items() if k != "id"}
    clash = _write(tmp_path, {**GOOD, "id": "tasks-2"}, no_id)
    with pytest.raises(UsageError, match=r"tasks.jsonl:2: expected a unique id; found 'tasks-2' again \(first on line 1\)"):
        load_tasks(clash)
    with pytest.raises(UsageError, match=r"tasks.jsonl:1: expected keys id, prompt, answer, type; missing answer$"):
        load_tasks(_write(tmp_path, {"prompt": "p", "type": "number"}))
    with pytest.raises(UsageError, match=r"tasks.jsonl:1: expected 'id' to be a non-empty string"):
        load_tasks(_write(tmp_path, {**GOOD, "id": None}))
