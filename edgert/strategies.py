"""Test-time strategies: how many samples to draw, how to pick the answer, when to stop.

Every strategy runs on a runner and returns by its deadline. Each one also describes the
work it does at most (``schedule``), which is what the planner prices with the device
profile before running anything:

- ``greedy``: one sample at temperature 0.
- ``sc``: self-consistency — N samples, majority vote over the extracted answers.
- ``esc``: early-stopping self-consistency — the samples are drawn in two waves (a majority
  first, then the rest) and drawing stops as soon as the remaining samples cannot change the
  vote; easy prompts finish after the first wave.
- ``bon``: best-of-N — N samples, the one with the highest mean token log-probability wins.
- ``bf``: budget forcing — a thinking segment of at most ``think_tokens``; then the runtime
  closes it and forces the answer segment, which has its own budget of ``answer_tokens``.

Samples of a prompt are decoded together where the backend batches (llama.cpp: parallel
sequences over the prompt's shared KV cache).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, ClassVar, Dict, List, Optional, Sequence, Tuple, Type

from .errors import UsageError
from .runners.types import CancelToken, Deadline, GenerationResult, SamplingParams
from .runners.base import Runner

#: sampling settings of the multi-sample strategies (greedy and thinking run at temperature 0)
SAMPLE_TEMPERATURE = 0.7
SAMPLE_TOP_P = 0.95


@dataclass(frozen=True)
class Config:
    """One point of the planner's search space."""

    variant: str
    strategy: str
    answer_tokens: int
    n: int = 1
    think_tokens: int = 0
    threads: Optional[int] = None  # None: the runtime's default thread count

    def __post_init__(self) -> None:
        if self.strategy not in Strategy.registry:
            raise UsageError(f"unknown strategy {self.strategy!r}; expected one of {', '.join(Strategy.registry)}")
        if self.answer_tokens < 1 or self.n < 1 or self.think_tokens < 0:
            raise UsageError(f"budgets and N must be positive, found {self}")
        if self.strategy in ("greedy", "bf") and self.n != 1:
            raise UsageError(f"strategy {self.strategy} draws one sample; found n={self.n}")
        if (self.strategy == "bf") != (self.think_tokens > 0):
            raise UsageError("a thinking budget belongs to the bf strategy only (and bf needs one)")

    @property
    def key(self) -> str:
        """Identifies the configuration in the accuracy table (threads excluded: they change
        speed and power, not answers)."""
        return f"{self.variant}|{self.strategy}|n{self.n}|t{self.think_tokens}|a{self.answer_tokens}"

    @property
    def label(self) -> str:
        parts = [self.variant, self.strategy + (f"x{self.n}" if self.n > 1 else "")]
        if self.think_tokens:
            parts.append(f"think {self.think_tokens}")
        parts.append(f"answer {self.answer_tokens}")
        if self.threads:
            parts.append(f"{self.threads} threads")
        return " ".join(parts)

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, object]) -> "Config":
        return cls(**{k: data[k] for k in ("variant", "strategy", "answer_tokens", "n", "think_tokens", "threads") if k in data})


@dataclass(frozen=True)
class Phase:
    """A unit of work the planner prices: a prompt evaluation or a run of decode steps."""

    kind: str  # "prefill" | "decode"
    tokens: int
    batch: int = 1


@dataclass(frozen=True)
class ThinkingFormat:
    """How a thinking segment opens and how the runtime closes it to force the answer."""

    open: str
    close: str
    stop: Tuple[str, ...]

    @classmethod
    def for_template(cls, chat_template: Optional[str]) -> "ThinkingFormat":
        if chat_template and "<think>" in chat_template:  # models trained to think (Qwen3, DeepSeek-R1 ...)
            return cls("<think>\n", "\n</think>\n\n", ("</think>",))
        # any other model: a step-by-step segment, closed by a forced answer phrase (s1-style)
        return cls("Let's think step by step.", "\nTherefore, the final answer is", ("final answer", "Question:"))


@dataclass
class AnswerSpec:
    """What kind of answer the request wants and how generation ends."""

    kind: Optional[str] = None  # number | choice | text | regex; None: the whole text is the answer
    choices: Tuple[str, ...] = ()
    pattern: Optional[str] = None
    stop: Tuple[str, ...] = ()
    thinking: Optional[ThinkingFormat] = None

    def extract(self, text: str) -> Optional[str]:
        from .answers import extract_answer, normalize_answer

        if self.kind is None:
            first = text.strip().splitlines()[0] if text.strip() else ""
            return normalize_answer(first, "text") if first else None
        value = extract_answer(text, self.kind, choices=self.choices or None, pattern=self.pattern)
        return None if value is None else normalize_answer(value, self.kind)


@dataclass
class StrategyOutcome:
    """What a strategy produced: the answer, the text it came from, and every sample."""

    answer: Optional[str]
    text: str
    finish_reason: str
    samples: List[GenerationResult]
    votes: Dict[str, int] = field(default_factory=dict)
    forced: bool = False  # budget forcing closed the thinking segment itself
    thinking_text: str = ""

    @property
    def tokens_out(self) -> int:
        return sum(s.tokens_out for s in self.samples)

    @property
    def samples_drawn(self) -> int:
        return sum(1 for s in self.samples if s.finish_reason != "dropped")

    @property
    def decode_step_ms(self) -> List[float]:
        """Step times of the longest sample of each call (batched steps are shared)."""
        return [ms for s in self.samples for ms in s.decode_step_ms]


def vote(answers: Sequence[Optional[str]], scores: Sequence[float]) -> Tuple[Optional[str], Dict[str, int]]:
    """Majority vote; a tie goes to the answer whose best sample scored highest."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None, {}
    best_score: Dict[str, float] = {}
    for answer, score in zip(answers, scores):
        if answer is not None:
            best_score[answer] = max(best_score.get(answer, -math.inf), score)
    winner = max(counts, key=lambda a: (counts[a], best_score[a]))
    return winner, dict(counts)


def vote_decided(answers: Sequence[Optional[str]], remaining: int) -> bool:
    """Whether ``remaining`` more votes could no longer change the winner."""
    top = Counter(a for a in answers if a is not None).most_common(2)
    if not top:
        return False
    second = top[1][1] if len(top) > 1 else 0
    return top[0][1] - second > remaining


class Strategy:
    """Base of the strategies; subclasses register by name."""

    name: ClassVar[str] = ""
    registry: ClassVar[Dict[str, Type["Strategy"]]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            Strategy.registry[cls.name] = cls

    def schedule(self, config: Config, prompt_tokens: int) -> List[Phase]:
        """The most work ``config`` does for a prompt of ``prompt_tokens`` tokens."""
        raise NotImplementedError

    def run(self, runner: Runner, prompt_ids: List[int], config: Config, spec: AnswerSpec, deadline: Deadline,
            cancel: CancelToken, seed: Optional[int] = None, reserve_s: Optional[Callable[[int], float]] = None) -> StrategyOutcome:
        raise NotImplementedError

    @staticmethod
    def _sampling(config: Config, spec: AnswerSpec, seed: Optional[int], greedy: bool) -> SamplingParams:
        if greedy:
            return SamplingParams(max_tokens=config.answer_tokens, temperature=0.0, stop=spec.stop)
        return SamplingParams(max_tokens=config.answer_tokens, temperature=SAMPLE_TEMPERATURE, top_p=SAMPLE_TOP_P,
                              seed=seed if seed is not None else 0, stop=spec.stop)


def strategy(name: str) -> Strategy:
    if name not in Strategy.registry:
        raise UsageError(f"unknown strategy {name!r}; expected one of {', '.join(Strategy.registry)}")
    return Strategy.registry[name]()


def _finish(samples: Sequence[GenerationResult]) -> str:
    reasons = {s.finish_reason for s in samples}
    for reason in ("cancelled", "deadline"):
        if reason in reasons:
            return reason
    return samples[0].finish_reason if samples else "deadline"


class Greedy(Strategy):
    name = "greedy"

    def schedule(self, config, prompt_tokens):
        return [Phase("prefill", prompt_tokens), Phase("decode", config.answer_tokens)]

    def run(self, runner, prompt_ids, config, spec, deadline, cancel, seed=None, reserve_s=None):
        result = runner.generate_ids(prompt_ids, self._sampling(config, spec, seed, greedy=True), deadline=deadline, cancel=cancel)
        return StrategyOutcome(spec.extract(result.text), result.text, result.finish_reason, [result])


class SelfConsistency(Strategy):
    name = "sc"

    def schedule(self, config, prompt_tokens):
        return [Phase("prefill", prompt_tokens), Phase("decode", config.answer_tokens, config.n)]

    def _pick(self, samples: List[GenerationResult], spec: AnswerSpec) -> Tuple[Optional[str], str, Dict[str, int]]:
        answers = [spec.extract(s.text) for s in samples]
        winner, counts = vote(answers, [s.mean_logprob for s in samples])
        text = next((s.text for s, a in zip(samples, answers) if a == winner and winner is not None),
                    samples[0].text if samples else "")
        return winner, text, counts

    def run(self, runner, prompt_ids, config, spec, deadline, cancel, seed=None, reserve_s=None):
        samples = runner.generate_many(prompt_ids, config.n, self._sampling(config, spec, seed, greedy=False),
                                       deadline=deadline, cancel=cancel)
        winner, text, counts = self._pick(samples, spec)
        return StrategyOutcome(winner, text, _finish(samples), samples, counts)


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
        return StrategyOutcome(winner, text, _finish(finished), finished, counts)


class BestOfN(SelfConsistency):
    name = "bon"

    def run(self, runner, prompt_ids, config, spec, deadline, cancel, seed=None, reserve_s=None):
        samples = runner.generate_many(prompt_ids, config.n, self._sampling(config, spec, seed, greedy=False),
                                       deadline=deadline, cancel=cancel)
        scored = [s for s in samples if s.tokens_out > 0] or samples
        best = max(scored, key=lambda s: s.mean_logprob)
        answers = [spec.extract(s.text) for s in samples]
        counts = dict(Counter(a for a in answers if a is not None))
        return StrategyOutcome(spec.extract(best.text), best.text, _finish(samples), samples, counts)


#: tokens the forced closing text is assumed to take when the answer phase is priced
FORCED_CLOSE_TOKENS = 12


class BudgetForcing(Strategy):
    name = "bf"

    def schedule(self, config, prompt_tokens):
        return [Phase("prefill", prompt_tokens + FORCED_CLOSE_TOKENS), Phase("decode", config.think_tokens),
                Phase("prefill", FORCED_CLOSE_TOKENS), Phase("decode", config.answer_tokens)]

    def run(self, runner, prompt_ids, config, spec, deadline, cancel, seed=None, reserve_s=None):
        fmt = spec.thinking or ThinkingFormat.for_template(None)
        open_ids = runner.tokenize_continuation(fmt.open)
        close_ids = runner.tokenize_continuation(fmt.close)
        stops = tuple(fmt.stop) + tuple(s for s in spec.stop if s.strip())
        think_params = SamplingParams(max_tokens=config.think_tokens, temperature=0.0, stop=stops)
        # the thinking phase ends early enough to leave the answer phase its predicted time
        reserve = reserve_s(config.answer_tokens) if reserve_s is not None else _observed_reserve_s(runner, config)
        think_deadline = _sub_deadline(deadline, reserve)
        samples: List[GenerationResult] = []
        think_ids: List[int] = []
        thinking_text = ""
        if think_deadline is not None and not cancel.cancelled:
            thought = runner.generate_ids(prompt_ids + open_ids, think_params, deadline=think_deadline, cancel=cancel)
            samples.append(thought)
            thinking_text = thought.text
            think_ids = _ids_of_text(runner, thought)
        answer_ids = prompt_ids + open_ids + think_ids + close_ids
        answer = runner.generate_ids(answer_ids, SamplingParams(max_tokens=config.answer_tokens, temperature=0.0,
                                                                stop=spec.stop), deadline=deadline, cancel=cancel)
        samples.append(answer)
        # forced unless the model closed its thinking itself (wrote the closing marker)
        forced = not (len(samples) > 1 and samples[0].finish_reason == "stop")
        return StrategyOutcome(spec.extract(answer.text), answer.text, answer.finish_reason, samples,
                               forced=forced, thinking_text=thinking_text)


def _ids_of_text(runner: Runner, result: GenerationResult) -> List[int]:
    """The thinking tokens to keep: all of them, minus a stop string the model wrote itself."""
    if result.finish_reason != "stop":
        return list(result.token_ids)
    return runner.tokenize_continuation(result.text) if result.text else []


def _observed_reserve_s(runner: Runner, config: Config) -> float:
    step = runner.step_estimate_s() or 0.05
    return step * (config.answer_tokens + FORCED_CLOSE_TOKENS) * 1.2


def _sub_deadline(deadline: Deadline, reserve_s: float) -> Optional[Deadline]:
    """A deadline ``reserve_s`` earlier than ``deadline`` (None when that has passed)."""
    if deadline.at is None:
        return deadline
    remaining = deadline.at - time.monotonic() - reserve_s
    return Deadline(remaining) if remaining > 0 else None
