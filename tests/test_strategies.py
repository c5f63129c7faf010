"""Test-time strategies on the real SmolLM2 bundle (llama.cpp, batched sequences)."""

import time
from collections import Counter

import numpy as np
import pytest

from edgert.errors import UsageError
from edgert.runners.types import CancelToken, Deadline, SamplingParams
from edgert.answers import AnswerSpec
from edgert.chat_template import ThinkingFormat
from edgert.strategies import Config, strategy, vote, vote_decided

EASY = "What is the capital of France? Answer with one word."
HARD = "Which letter comes first in the alphabet: A, B, C or D? Answer with the letter only."
ARITH = "Tom has 3 apples and buys 4 more. How many apples does Tom have? Answer with the number only."


def run(runner, prompt, config, spec, deadline=None, seed=0):
    ids = runner.encode(prompt)
    return strategy(config.strategy).run(runner, ids, config, spec, deadline or Deadline(None), CancelToken(), seed=seed)


def test_batched_samples_equal_the_same_samples_drawn_one_by_one(smollm2_runner):
    ids = smollm2_runner.encode(ARITH)
    params = SamplingParams(max_tokens=16, temperature=0.7, top_p=0.95, seed=11)
    batched = smollm2_runner.generate_many(ids, 4, params)
    alone = [smollm2_runner.generate_ids(ids, SamplingParams(max_tokens=16, temperature=0.7, top_p=0.95, seed=11 + i))
             for i in range(4)]
    assert [b.token_ids for b in batched] == [a.token_ids for a in alone]
    assert len({tuple(b.token_ids) for b in batched}) > 1  # the samples differ from each other


def test_prompt_prefix_is_reused_from_the_cache(smollm2_runner):
    ids = smollm2_runner.encode(ARITH)
    smollm2_runner.forget_cache()
    first = smollm2_runner.generate_ids(ids, SamplingParams(max_tokens=4))
    again = smollm2_runner.generate_ids(ids, SamplingParams(max_tokens=4))
    assert first.cached_tokens == 0 and again.cached_tokens == len(ids) - 1
    assert again.token_ids == first.token_ids


def test_self_consistency_answer_is_the_majority_of_its_samples(smollm2_runner):
    spec = AnswerSpec(kind="number")
    out = run(smollm2_runner, ARITH, Config("v", "sc", 24, n=5), spec)
    assert len(out.samples) == 5
    answers = [spec.extract(s.text) for s in out.samples]
    counts = Counter(a for a in answers if a is not None)
    assert out.votes == dict(counts)
    assert counts[out.answer] == max(counts.values())
    assert out.text in [s.text for s in out.samples]


def test_early_stopping_draws_fewer_samples_on_an_easy_prompt(smollm2_runner):
    easy = run(smollm2_runner, EASY, Config("v", "esc", 16, n=5), AnswerSpec(kind="text"))
    assert easy.samples_drawn == 3 < 5  # the first wave (a majority) agreed
    assert easy.votes == {easy.answer: 3} and "paris" in easy.answer
    full = run(smollm2_runner, EASY, Config("v", "sc", 16, n=5), AnswerSpec(kind="text"))
    assert full.answer == easy.answer and len(full.samples) == 5
    hard = run(smollm2_runner, HARD, Config("v", "esc", 16, n=5), AnswerSpec(kind="choice"))
    assert hard.samples_drawn == 5  # no early agreement: the second wave ran


def test_best_of_n_returns_the_highest_scoring_sample(smollm2_runner):
    out = run(smollm2_runner, ARITH, Config("v", "bon", 24, n=4), AnswerSpec(kind="number"))
    best = max((s for s in out.samples if s.tokens_out), key=lambda s: s.mean_logprob)
    assert out.text == best.text
    assert out.answer == AnswerSpec(kind="number").extract(best.text)


@pytest.mark.parametrize("think,answer", [(8, 4), (24, 8), (40, 2)])
def test_budget_forcing_never_exceeds_its_budgets(smollm2_runner, think, answer):
    spec = AnswerSpec(kind="number", thinking=ThinkingFormat.for_template(smollm2_runner.chat_template_source))
    out = run(smollm2_runner, ARITH, Config("v", "bf", answer, think_tokens=think), spec)
    thought, final = out.samples
    assert thought.tokens_out <= think and final.tokens_out <= answer
    assert out.forced == (thought.finish_reason != "stop")
    assert out.thinking_text == thought.text and out.text == final.text


def test_budget_forcing_cuts_thinking_to_leave_time_for_the_answer(smollm2_runner):
    spec = AnswerSpec(kind="number")
    ids = smollm2_runner.encode("Write a long story about a robot who learns to count, then say how many legs it has.")
    deadline = Deadline(1.5)
    out = strategy("bf").run(smollm2_runner, ids, Config("v", "bf", 6, think_tokens=500), spec, deadline,
                             CancelToken(), reserve_s=lambda a: 0.5)
    elapsed = deadline.elapsed_s()
    thought, final = out.samples
    assert out.forced and thought.finish_reason == "deadline"
    assert final.tokens_out > 0  # the answer phase got its reserved time
    assert elapsed <= 1.5 + 0.1


@pytest.mark.parametrize("name,n", [("greedy", 1), ("sc", 5), ("esc", 5), ("bon", 3)])
def test_every_strategy_answers_by_the_deadline(smollm2_runner, name, n):
    step_s = float(np.median(smollm2_runner.generate("Count to ten.", SamplingParams(max_tokens=8)).decode_step_ms)) / 1000
    deadline = Deadline(1.5)
    out = run(smollm2_runner, "Write a long story about a robot.", Config("v", name, 400, n=n),
              AnswerSpec(kind="text"), deadline=deadline)
    elapsed = deadline.elapsed_s()
    assert out.finish_reason == "deadline"
    assert elapsed <= 1.5 + max(5 * step_s, 0.05)  # a batched step of 5 costs a few single steps
    assert out.samples and any(s.tokens_out for s in out.samples)  # it votes with what it has


def test_vote_helpers():
    assert vote(["4", "4", "5", None], [0.0, -1.0, -0.1, 0.0]) == ("4", {"4": 2, "5": 1})
    assert vote(["4", "5"], [-2.0, -0.5])[0] == "5"  # a tie goes to the better-scored answer
    assert vote([None, None], [0, 0]) == (None, {})
    assert vote_decided(["a", "a", "a"], 2) and not vote_decided(["a", "a", "b"], 1)


def test_config_validation():
    with pytest.raises(UsageError, match="unknown strategy"):
        Config("v", "beam", 16)
    with pytest.raises(UsageError, match="one sample"):
        Config("v", "greedy", 16, n=3)
    with pytest.raises(UsageError, match="thinking budget"):
        Config("v", "bf", 16)
    assert Config("v", "sc", 16, n=5).key == "v|sc|n5|t0|a16"
