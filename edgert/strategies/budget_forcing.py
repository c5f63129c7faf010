"""Budget forcing (s1-style): think for at most ``think_tokens``, then close the thinking
segment and force the answer, which has its own budget of ``answer_tokens``.

The thinking phase ends early enough to leave the answer phase its predicted time, so the
answer comes by the deadline even when thinking would have run on. Calibration keeps the
first ``t`` thinking tokens of one long thought and runs the forced answer phase for each
thinking budget ``t``.
"""

from __future__ import annotations

from typing import Iterator, List, Tuple

from ..answers import AnswerSpec
from ..chat_template import ThinkingFormat
from ..runners.base import Runner
from ..runners.types import GenerationResult, SamplingParams
from .base import Config, Draws, Phase, Prefix, Strategy, StrategyOutcome, Trial, sub_deadline
from .confidence import signals

#: tokens the forced closing text is assumed to take when the answer phase is priced
FORCED_CLOSE_TOKENS = 12


def segments(runner: Runner, spec: AnswerSpec) -> Tuple[List[int], List[int], Tuple[str, ...]]:
    """Token ids that open and close the thinking segment, and the strings that end it."""
    fmt = spec.thinking or ThinkingFormat.for_template(None)
    stops = tuple(fmt.stop) + tuple(s for s in spec.stop if s.strip())
    return runner.tokenize_continuation(fmt.open), runner.tokenize_continuation(fmt.close), stops


class BudgetForcing(Strategy):
    name = "bf"
    uses_thinking = True

    def schedule(self, config, prompt_tokens):
        return [Phase("prefill", prompt_tokens + FORCED_CLOSE_TOKENS), Phase("decode", config.think_tokens),
                Phase("prefill", FORCED_CLOSE_TOKENS), Phase("decode", config.answer_tokens)]

    def run(self, runner, prompt_ids, config, spec, deadline, cancel, seed=None, reserve_s=None):
        open_ids, close_ids, stops = segments(runner, spec)
        think_params = SamplingParams(max_tokens=config.think_tokens, temperature=0.0, stop=stops)
        reserve = reserve_s(config.answer_tokens) if reserve_s is not None else _observed_reserve_s(runner, config)
        think_deadline = sub_deadline(deadline, reserve)
        samples: List[GenerationResult] = []
        think_ids: List[int] = []
        thinking_text = ""
        if think_deadline is not None and not cancel.cancelled:
            thought = runner.generate_ids(prompt_ids + open_ids, think_params, deadline=think_deadline, cancel=cancel)
            samples.append(thought)
            thinking_text = thought.text
            think_ids = _kept_thinking(runner, thought)
        answer_ids = prompt_ids + open_ids + think_ids + close_ids
        answer = runner.generate_ids(answer_ids, SamplingParams(max_tokens=config.answer_tokens, temperature=0.0,
                                                                stop=spec.stop, constraint=spec.constraint),
                                     deadline=deadline, cancel=cancel)
        samples.append(answer)
        # forced unless the model closed its thinking itself (wrote the closing marker)
        forced = not (len(samples) > 1 and samples[0].finish_reason == "stop")
        return StrategyOutcome(spec.extract(answer.text), answer.text, answer.finish_reason, samples,
                               forced=forced, thinking_text=thinking_text)

    def replay(self, draws: Draws, grid, variant: str) -> Iterator[Trial]:
        runner, ids, spec = draws.runner, draws.prompt_ids, draws.spec
        open_ids, close_ids, stops = segments(runner, spec)
        thought = runner.generate_ids(ids + open_ids, SamplingParams(max_tokens=max(grid.think_tokens), stop=stops))
        for t in grid.think_tokens:
            if t >= thought.tokens_out and thought.finish_reason == "stop":
                think_ids = _kept_thinking(runner, thought)
            else:
                think_ids = thought.token_ids[:t]
            params = SamplingParams(max_tokens=draws.answer_tokens, stop=spec.stop)
            answer = Prefix(runner, runner.generate_ids(ids + open_ids + think_ids + close_ids, params), spec.stop)
            for a in grid.answer_tokens:
                steps = min(len(think_ids), t) + answer.tokens(a)
                evidence = answer.evidence(a, spec)
                yield Trial(Config(variant, self.name, a, think_tokens=t), evidence.answer, 1, steps, steps,
                            signals([evidence], evidence.answer))


def _kept_thinking(runner: Runner, result: GenerationResult) -> List[int]:
    """The thinking tokens to keep: all of them, minus a stop string the model wrote itself."""
    if result.finish_reason != "stop":
        return list(result.token_ids)
    return runner.tokenize_continuation(result.text) if result.text else []


def _observed_reserve_s(runner: Runner, config: Config) -> float:
    step = runner.step_estimate_s() or 0.05
    return step * (config.answer_tokens + FORCED_CLOSE_TOKENS) * 1.2
