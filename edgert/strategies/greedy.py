"""Greedy: one sample at temperature 0."""

from __future__ import annotations

from typing import Iterator

from .base import Draws, Phase, Strategy, StrategyOutcome, Trial
from .confidence import signals


class Greedy(Strategy):
    name = "greedy"

    def schedule(self, config, prompt_tokens):
        return [Phase("prefill", prompt_tokens), Phase("decode", config.answer_tokens)]

    def run(self, runner, prompt_ids, config, spec, deadline, cancel, seed=None, reserve_s=None):
        result = runner.generate_ids(prompt_ids, self._sampling(config, spec, seed, greedy=True), deadline=deadline,
                                     cancel=cancel)
        return StrategyOutcome(spec.extract(result.text), result.text, result.finish_reason, [result])

    def replay(self, draws: Draws, grid, variant: str) -> Iterator[Trial]:
        for a in grid.answer_tokens:
            for config in self.grid_configs(grid, variant, a):
                tokens = draws.greedy.tokens(a)
                evidence = draws.greedy.evidence(a, draws.spec)
                yield Trial(config, evidence.answer, 1, tokens, tokens, signals([evidence], evidence.answer))
