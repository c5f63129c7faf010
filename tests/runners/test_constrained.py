"""Constrained decoding on the real SmolLM2 model: every kind of constraint, penalties and
bias, the deadline (answers valid or flagged, never late, never made up by the grammar),
batched samples with their own matchers, and bad constraints refused before generating."""

import json
import re
import time

import jsonschema
import pytest

from edgert.constraint import Constraint
from edgert.errors import UsageError
from edgert.runners.guidance import closing_cost
from edgert.runners.types import Deadline, SamplingParams

pytestmark = pytest.mark.slow

ROBOT = {"type": "object", "properties": {"action": {"enum": ["stop", "go"]}, "speed": {"type": "number"}},
         "required": ["action", "speed"], "additionalProperties": False}
PROMPT = "An obstacle is 1 m ahead. Reply in JSON with action (stop or go) and speed in m/s."


def test_each_kind_of_constraint_gives_a_valid_answer(smollm2_runner):
    cases = [
        (Constraint.json_schema(ROBOT), lambda t: jsonschema.validate(json.loads(t), ROBOT) is None),
        (Constraint.json_object(), lambda t: isinstance(json.loads(t), dict)),
        (Constraint.regex(r"(left|right) [0-9]{1,2}"), lambda t: re.fullmatch(r"(left|right) [0-9]{1,2}", t)),
        (Constraint.choices(["yes", "no", "maybe not"]), lambda t: t in ("yes", "no", "maybe not")),
        (Constraint.lark('start: "turn " DIR\nDIR: "left" | "right"\n'), lambda t: t in ("turn left", "turn right")),
        (Constraint.gbnf('root ::= "A" | "B" | "C"'), lambda t: t in "ABC" and len(t) == 1),
    ]
    for constraint, ok in cases:
        result = smollm2_runner.generate(PROMPT, SamplingParams(max_tokens=48, constraint=constraint))
        assert result.constraint_satisfied is True, (constraint.kind, result.text)
        assert ok(result.text), (constraint.kind, result.text)
        assert result.mask_ms and len(result.mask_ms) >= len(result.decode_step_ms)
    plain = smollm2_runner.generate(PROMPT, SamplingParams(max_tokens=8))
    assert plain.constraint_satisfied is None and plain.mask_ms == []


def test_json_is_compact_unless_asked(smollm2_runner):
    compact = smollm2_runner.generate(PROMPT, SamplingParams(max_tokens=48, constraint=Constraint.json_schema(ROBOT)))
    assert compact.constraint_satisfied and not re.search(r"\s", compact.text)


def test_the_token_budget_closes_the_structure(smollm2_runner):
    """A budget too small for the model's answer: steered and closed within it."""
    schema = {"type": "object", "properties": {"note": {"type": "string"}}, "required": ["note"]}
    for max_tokens in (6, 9, 14):
        result = smollm2_runner.generate("Write a long poem about the sea, as JSON with a note.",
                                         SamplingParams(max_tokens=max_tokens, temperature=1.0, seed=2,
                                                        constraint=Constraint.json_schema(schema)))
        assert result.tokens_out <= max_tokens
        assert result.constraint_satisfied, (max_tokens, result.text)
        jsonschema.validate(json.loads(result.text), schema)


def test_a_deadline_gives_a_valid_answer_or_says_it_is_not(smollm2_runner):
    for seconds in (0.03, 0.06, 0.1, 0.2, 0.4):
        deadline = Deadline(seconds)
        result = smollm2_runner.generate(PROMPT, SamplingParams(max_tokens=200, temperature=1.0, seed=5,
                                                                constraint=Constraint.json_schema(ROBOT)),
                                         deadline=deadline)
        assert deadline.elapsed_s() <= seconds + 0.005, seconds
        if result.constraint_satisfied:
            jsonschema.validate(json.loads(result.text), ROBOT)
        else:
            with pytest.raises((ValueError, jsonschema.ValidationError)):
                jsonschema.validate(json.loads(result.text), ROBOT)


def test_the_grammar_closes_structure_but_never_supplies_a_value(smollm2_runner):
    guide = smollm2_runner.guide()
    tokens = lambda text: smollm2_runner.tokenize_continuation(text)  # noqa: E731
    open_value = guide.sequence(Constraint.json_schema(ROBOT))
    for t in tokens('{"action":"stop","speed":'):
        open_value.accept(t)
    path, complete = open_value.closing_path()
    assert not complete and path == []  # the speed is missing: nothing is made up
    open_string = guide.sequence(Constraint.json_schema({"type": "object", "properties": {"note": {"type": "string"}}}))
    for t in tokens('{"note":"slow dow'):
        open_string.accept(t)
    path, complete = open_string.closing_path()
    assert complete and smollm2_runner.detokenize(path) == '"}'
    assert closing_cost(b'"}', False) < closing_cost(b",", False) < closing_cost(b"7", False) < closing_cost(b"go", False)


def test_batched_samples_each_follow_their_own_matcher(smollm2_runner):
    ids = smollm2_runner.encode(PROMPT)
    samples = smollm2_runner.generate_many(ids, 3, SamplingParams(max_tokens=40, temperature=1.0, seed=11,
                                                                  constraint=Constraint.json_schema(ROBOT)))
    assert len(samples) == 3
    for sample in samples:
        assert sample.constraint_satisfied, sample.text
        jsonschema.validate(json.loads(sample.text), ROBOT)


def test_logit_bias_and_penalties_change_what_is_drawn(smollm2_runner):
    base = smollm2_runner.generate("Count: 1, 2, 3,", SamplingParams(max_tokens=6))
    first = base.token_ids[0]
    banned = smollm2_runner.generate("Count: 1, 2, 3,", SamplingParams(max_tokens=6, logit_bias={first: -100}))
    assert banned.token_ids[0] != first
    forced = smollm2_runner.generate("Count: 1, 2, 3,", SamplingParams(max_tokens=3, logit_bias={42: 100}))
    assert forced.token_ids == [42, 42, 42]
    repeated = smollm2_runner.generate("Say hello hello hello hello", SamplingParams(max_tokens=24, ignore_eos=True))
    penalized = smollm2_runner.generate("Say hello hello hello hello",
                                        SamplingParams(max_tokens=24, ignore_eos=True, frequency_penalty=2.0))
    assert len(set(penalized.token_ids)) > len(set(repeated.token_ids))
    alternatives = smollm2_runner.generate("The capital of France is", SamplingParams(max_tokens=3, top_logprobs=4))
    assert [len(a) for a in alternatives.top_logprobs] == [4, 4, 4]
    assert alternatives.top_logprobs[0][0][0] == alternatives.token_ids[0]  # greedy: the top alternative is drawn


def test_bad_constraints_are_refused_before_generation():
    for bad, message in [(Constraint.regex("(a|b"), "regex"), (Constraint.json_schema({"type": "strin"}), "schema"),
                         (Constraint.choices([]), "choices"), (Constraint.lark("start: ]["), "Lark"),
                         (Constraint.gbnf("root ::= = ="), "GBNF"), (Constraint("xml", "<a/>"), "kind"),
                         (Constraint.json_schema("{not json"), "JSON")]:
        with pytest.raises(UsageError, match=message) as caught:
            bad.check()
        assert caught.value.field == "constraint"


def test_the_guide_is_built_once_per_model(smollm2_runner):
    started = time.perf_counter()
    first = smollm2_runner.guide()
    assert smollm2_runner.guide() is first
    assert first.build_ms > 0 and time.perf_counter() - started < 5
