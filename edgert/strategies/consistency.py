"""Voting over several samples: self-consistency, its early-stopping form, and best-of-N.

- ``sc``: N samples, majority vote over the extracted answers.
- ``esc``: early-stopping self-consistency. The samples are drawn in two waves (a majority
  first, then the rest) and drawing stops as soon as the remaining samples cannot change the
  vote; easy prompts finish after the first wave. Calibration records it with the samples it
  would have drawn (its answer is always the full vote's), which is where it saves time.
- ``bon``: best-of-N, the sample with the highest mean token log-probability wins.

The samples of a prompt are decoded together where the backend batches (llama.cpp:
parallel sequences over the prompt's shared KV cache).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Dict, Iterator, List, Optional, Tuple

from ..answers import AnswerSpec
from ..runners.types import GenerationResult
from .base import (Draws, Phase, Strategy, StrategyOutcome, Trial, evidence_of, finish_reason, valid, vote,
                   vote_decided)
from .confidence import Evidence, Signals, signals


class SelfConsistency(Strategy):
    name = "sc"
    multi_sample = True

    def schedule(self, config, prompt_tokens):
        return [Phase("prefill", prompt_tokens), Phase("decode", config.answer_tokens, config.n)]

    def _pick(self, samples: List[GenerationResult], spec: AnswerSpec) -> Tuple[Optional[str], str, Dict[str, int]]:
        samples = valid(samples)  # with a constraint, only valid answers vote
        answers = [spec.extract(s.text) for s in samples]
        winner, counts = vote(answers, [s.mean_logprob for s in samples])
        text = next((s.text for s, a in zip(samples, answers) if a == winner and winner is not None),
                    samples[0].text if samples else "")
        return winner, text, counts

    def run(self, runner, prompt_ids, config, spec, deadline, cancel, seed=None, reserve_s=None):
        samples = runner.generate_many(prompt_ids, config.n, self._sampling(config, spec, seed, greedy=False),
                                       deadline=deadline, cancel=cancel)
        winner, text, counts = self._pick(samples, spec)
        return StrategyOutcome(winner, text, finish_reason(samples), samples, counts)

    def confidence(self, outcome: StrategyOutcome, spec: AnswerSpec) -> Signals:
        return signals([evidence_of(s, spec) for s in outcome.samples], outcome.answer)

    def replay(self, draws: Draws, grid, variant: str) -> Iterator[Trial]:
        for a in grid.answer_tokens:
            for config in self.grid_configs(grid, variant, a):
                samples = draws.samples(config.sample_temperature)[:config.n]
                evidence = [s.evidence(a, draws.spec) for s in samples]
                yield self._trial(config, evidence, [s.score(a) for s in samples], [s.tokens(a) for s in samples])

    def _trial(self, config, evidence: List[Evidence], scores, tokens) -> Trial:
        winner = vote([e.answer for e in evidence], scores)[0]
        return Trial(config, winner, config.n, sum(tokens), max(tokens), signals(evidence, winner))


class EarlyStoppingSelfConsistency(SelfConsistency):
    name = "esc"

    @staticmethod
    def first_wave(n: int) -> int:
        return n // 2 + 1  # a majority: if they all agree, the rest cannot change the vote

    def schedule(self, config, prompt_tokens):
        k = self.first_wave(config.n)
        phases = [Phase("prefill", prompt_tokens), Phase("decode", config.answer_tokens, k)]
        if config.n > k:
            phases += [Phase("prefill", 1), Phase("decode", config.answer_tokens, config.n - k)]
        return phases

    def run(self, runner, prompt_ids, config, spec, deadline, cancel, seed=None, reserve_s=None):
        params = self._sampling(config, spec, seed, greedy=False)
        done: List[GenerationResult] = []

        def should_stop(finished: List[GenerationResult]) -> bool:
            drawn = done + finished
            return vote_decided([spec.extract(s.text) for s in drawn], config.n - len(drawn))

        k = self.first_wave(config.n)
        done += runner.generate_many(prompt_ids, k, params, deadline=deadline, cancel=cancel, should_stop=should_stop)
        finished = [s for s in done if s.finish_reason != "dropped"]
        if config.n > k and not should_stop([]) and not deadline.expired() and not cancel.cancelled:
            second = runner.generate_many(prompt_ids, config.n - k, replace(params, seed=params.seed + k),
                                          deadline=deadline, cancel=cancel, should_stop=should_stop)
            done += second
            finished += [s for s in second if s.finish_reason != "dropped"]
        winner, text, counts = self._pick(finished, spec)
        return StrategyOutcome(winner, text, finish_reason(finished), finished, counts)

    def _trial(self, config, evidence: List[Evidence], scores, tokens) -> Trial:
        n = config.n
        k = self.first_wave(n)
        answers = [e.answer for e in evidence]
        drawn = k if n == k or vote_decided(answers[:k], n - k) else n
        steps = max(tokens[:k]) + (max(tokens[k:n]) if drawn > k else 0)
        winner = vote(answers, scores)[0]  # the full vote's answer, which the early stop never changes
        return Trial(config, winner, drawn, sum(tokens[:drawn]), steps, signals(evidence[:drawn], winner))


class BestOfN(SelfConsistency):
    name = "bon"

    def run(self, runner, prompt_ids, config, spec, deadline, cancel, seed=None, reserve_s=None):
        samples = runner.generate_many(prompt_ids, config.n, self._sampling(config, spec, seed, greedy=False),
                                       deadline=deadline, cancel=cancel)
        scored = [s for s in valid(samples) if s.tokens_out > 0] or valid(samples)
        best = max(scored, key=lambda s: s.mean_logprob)
        answers = [spec.extract(s.text) for s in samples]
        counts = dict(Counter(a for a in answers if a is not None))
        return StrategyOutcome(spec.extract(best.text), best.text, finish_reason(samples), samples, counts)

    def _trial(self, config, evidence: List[Evidence], scores, tokens) -> Trial:
        best = max(range(config.n), key=lambda i: scores[i])
        winner = evidence[best].answer
        return Trial(config, winner, config.n, sum(tokens), max(tokens), signals(evidence, winner))
