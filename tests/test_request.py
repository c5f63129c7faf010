"""Request.check: every rule about a request's fields, in one place, with the field named."""

import pytest

from edgert.errors import UsageError
from edgert.request import Request


@pytest.mark.parametrize("fields,field", [
    ({"deadline_s": 0}, "deadline_s"),
    ({"deadline_s": 10**400}, "deadline_s"),  # too large for a float: refused, not an OverflowError
    ({"power_w": -3, "strategy": "auto", "deadline_s": 1}, "power_w"),
    ({"energy_j": float("nan"), "strategy": "auto", "deadline_s": 1}, "energy_j"),
    ({"strategy": "magic"}, "strategy"),
    ({"n": 3}, "n"),  # a sampling count without a strategy would be ignored
    ({"energy_j": 5, "strategy": "greedy"}, "energy_j"),  # only the planner honours an energy limit
    ({"strategy": "auto"}, "deadline_s"),
    ({"seed": -1}, "seed"),  # numpy refuses negative seeds mid-run
    ({"seed": 1.5}, "seed"),
    ({"temperature": 10**400}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"stop": ("",)}, "stop"),
    ({"answer_type": "poem", "strategy": "greedy"}, "answer_type"),
    ({"answer_type": "regex", "strategy": "greedy"}, "pattern"),  # a regex answer needs its pattern
    ({"answer_type": "regex", "pattern": "([0-9", "strategy": "greedy"}, "pattern"),  # that compiles
    ({"n": 0, "strategy": "sc"}, "n"),
])
def test_a_bad_field_is_refused_and_named(fields, field):
    with pytest.raises(UsageError) as caught:
        Request("What is 2+3?", **fields).check()
    assert caught.value.field == field and "\n" not in str(caught.value)


def test_auto_needs_a_profile_when_the_runtime_has_none():
    request = Request("hi", strategy="auto", deadline_s=1)
    assert request.check(has_profile=True) is request
    with pytest.raises(UsageError, match="needs a device profile"):
        request.check(has_profile=False)


def test_messages_name_the_callers_own_spelling():
    with pytest.raises(UsageError, match=r"^--n need --strategy"):
        Request("hi", n=3).check(names={"n": "--n", "strategy": "--strategy"})


def test_valid_requests_pass_and_sequences_become_tuples():
    request = Request([{"role": "user", "content": "hi"}], stop=["\n"], choices=["a", "b"], strategy="sc", n=3,
                      seed=0, deadline_s=2, power_w=5, answer_type="regex", pattern=r"\d+").check()
    assert request.stop == ("\n",) and request.choices == ("a", "b")
    assert request.sampling.seed == 0 and request.sampling.stop == ("\n",)
    Request("hi", strategy="greedy", power_w=5).check()  # a power limit with a named strategy moves the knob
    with pytest.raises(UsageError, match="message list"):
        Request([{"role": "user", "content": "hi"}], chat=False).check()


def test_constraint_and_openai_sampling_fields_are_checked():
    from edgert.constraint import Constraint

    good = Request("hi", constraint=Constraint.choices(["a", "b"]), fallback="a", logit_bias={3: -100},
                   presence_penalty=1, frequency_penalty=-2, top_logprobs=20, completions=4).check()
    params = good.sampling
    assert params.constraint.kind == "choices" and params.logit_bias == {3: -100} and params.top_logprobs == 20
    for fields, field in [({"constraint": "json"}, "constraint"), ({"constraint": Constraint.regex("(")}, "constraint"),
                          ({"fallback": {"a": 1}}, "fallback"), ({"completions": 0}, "completions"),
                          ({"completions": 2, "strategy": "greedy"}, "completions"),
                          ({"logit_bias": {"3": 1}}, "logit_bias"), ({"logit_bias": {3: 500}}, "logit_bias"),
                          ({"presence_penalty": 2.5}, "presence_penalty"), ({"top_logprobs": 21}, "top_logprobs"),
                          ({"strategy": {"a": 1}}, "strategy"),
                          ({"prompt": [{"role": "assistant", "content": None}]}, "prompt")]:
        prompt = fields.pop("prompt", "hi")
        with pytest.raises(UsageError) as caught:
            Request(prompt, **fields).check()
        assert caught.value.field == field, fields
    calls = [{"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {"name": "f"}}]}]
    Request(calls).check()  # an assistant's tool call may come without content
