"""What every test-time strategy shares: the configuration, the vote, the registry, and
the draws calibration replays.

A strategy (one file per family beside this one) owns three things:

- ``schedule(config, prompt_tokens)``: the most work it does, which the planner prices with
  the device profile before anything runs;
- ``run(...)``: the real thing on a runner, by the deadline;
- ``replay(draws, grid, variant)``: its calibration shortcut. Calibration generates once per
  task at the largest budget and N (``Draws``) and every strategy reads its smaller
  configurations off those generations (a budget of ``a`` tokens gives exactly the first
  ``a`` tokens of a longer generation with the same seed; any ``n`` of independent samples
  are a fair sample of ``n``).

Policy is data on the class: ``multi_sample`` (draws several samples), ``uses_thinking``
(has a thinking budget). Adding a strategy is adding one file and importing it in
``__init__``.
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Callable, ClassVar, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Type

import numpy as np

from ..answers import AnswerSpec
from ..errors import UsageError
from ..runners.base import Runner
from ..runners.types import CancelToken, Deadline, GenerationResult, SamplingParams, StepRecord
from .confidence import Evidence, Signals, signals

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
    #: sampling temperature of a multi-sample strategy (None: SAMPLE_TEMPERATURE); calibration
    #: measures several, so each model votes at the setting that suits it
    temperature: Optional[float] = None

    def __post_init__(self) -> None:
        if self.strategy not in Strategy.registry:
            raise UsageError(f"unknown strategy {self.strategy!r}; expected one of {', '.join(Strategy.registry)}")
        if self.answer_tokens < 1 or self.n < 1 or self.think_tokens < 0:
            raise UsageError(f"budgets and N must be positive, found {self}")
        family = Strategy.registry[self.strategy]
        if not family.multi_sample and self.n != 1:
            raise UsageError(f"strategy {self.strategy} draws one sample; found n={self.n}")
        if family.uses_thinking != (self.think_tokens > 0):
            thinking = [name for name, cls in Strategy.registry.items() if cls.uses_thinking]
            raise UsageError(f"a thinking budget belongs to the {'/'.join(thinking)} strategy only (and it needs one)")
        if self.temperature is not None:
            if not family.multi_sample:
                raise UsageError(f"strategy {self.strategy} decodes at temperature 0; a temperature belongs to the "
                                 "sampling strategies")
            if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) or \
                    not 0 < self.temperature <= 2:
                raise UsageError(f"a sampling temperature must be within (0, 2], found {self.temperature!r}")

    @property
    def sample_temperature(self) -> float:
        """The temperature the samples are drawn at."""
        return SAMPLE_TEMPERATURE if self.temperature is None else float(self.temperature)

    @functools.cached_property
    def key(self) -> str:
        """Identifies the configuration in the accuracy table (threads excluded: they change
        speed and power, not answers)."""
        key = f"{self.variant}|{self.strategy}|n{self.n}|t{self.think_tokens}|a{self.answer_tokens}"
        return key if self.temperature is None else f"{key}|T{self.temperature:g}"

    @classmethod
    def from_key(cls, key: str) -> "Config":
        """The configuration a ``key`` names (the inverse of ``key``)."""
        try:
            parts = key.split("|")
            variant, strategy_name, n, t, a = parts[:5]
            if len(parts) > 6 or (len(parts) == 6 and not parts[5].startswith("T")):
                raise ValueError(key)
            temperature = float(parts[5][1:]) if len(parts) == 6 else None
            return cls(variant, strategy_name, int(a[1:]), n=int(n[1:]), think_tokens=int(t[1:]), temperature=temperature)
        except ValueError:
            raise UsageError(f"a configuration key looks like 'variant|strategy|nN|tT|aA' (and '|Ttemperature' for "
                             f"sampling strategies), found {key!r}") from None

    @property
    def label(self) -> str:
        parts = [self.variant, self.strategy + (f"x{self.n}" if self.n > 1 else "")]
        if self.think_tokens:
            parts.append(f"think {self.think_tokens}")
        if self.temperature is not None:
            parts.append(f"T={self.temperature:g}")
        parts.append(f"answer {self.answer_tokens}")
        if self.threads:
            parts.append(f"{self.threads} thread" + ("s" if self.threads != 1 else ""))
        return " ".join(parts)

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, object]) -> "Config":
        fields = ("variant", "strategy", "answer_tokens", "n", "think_tokens", "threads", "temperature")
        return cls(**{k: data[k] for k in fields if k in data})


@dataclass(frozen=True)
class Phase:
    """A unit of work the planner prices: a prompt evaluation or a run of decode steps."""

    kind: str  # "prefill" | "decode"
    tokens: int
    batch: int = 1


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

    def merged_with(self, other: "StrategyOutcome") -> "StrategyOutcome":
        """This outcome's answer with the samples of both (a cascade's two stages: telemetry
        counts every sample; the answer's own samples come last)."""
        return StrategyOutcome(self.answer, self.text, self.finish_reason, other.samples + self.samples, self.votes,
                               self.forced, self.thinking_text)

    @property
    def steps(self) -> List[StepRecord]:
        """Every engine call's timing records, once each (batched samples share theirs)."""
        seen: Dict[int, List[StepRecord]] = {}
        for sample in self.samples:
            seen.setdefault(id(sample.steps), sample.steps)
        return [record for records in seen.values() for record in records]


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


class Trial(NamedTuple):
    """One configuration's result on one calibration task, read off the shared draws.

    steps: decode steps it takes (batched samples share a step, so a batch takes as many
    steps as its longest sample)."""

    config: Config
    answer: Optional[str]
    samples: int
    tokens: int
    steps: int
    signals: Signals = {}  # confidence of the answer (strategies.confidence); never mutated


def task_seed(task_id: str, seed: int) -> int:
    """The sampling seed of one calibration task (stable across runs and machines)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{task_id}".encode()).digest()[:4], "little")


class Prefix:
    """Text and score of the first k tokens of a generation, as a budget of k would give."""

    def __init__(self, runner: Runner, result: GenerationResult, stop: Sequence[str]):
        self.runner, self.result, self.stop = runner, result, stop

    def text(self, k: int) -> str:
        ids = self.result.token_ids
        if k >= len(ids):
            return self.result.text
        text = self.runner.detokenize(ids[:k])
        cuts = [text.find(s) for s in self.stop if s in text]
        return text[: min(cuts)] if cuts else text

    def tokens(self, k: int) -> int:
        return min(k, self.result.tokens_out)

    def score(self, k: int) -> float:
        lp = self.result.token_logprobs[:k]
        return float(np.mean(lp)) if lp else float("-inf")

    def evidence(self, k: int, spec: AnswerSpec) -> Evidence:
        """What confidence sees of the first ``k`` tokens, as a run with budget ``k`` shows it."""
        return Evidence(spec.extract(self.text(k)), self.result.token_logprobs[:k], self.result.first_margin)


def evidence_of(result: GenerationResult, spec: AnswerSpec) -> Evidence:
    """What confidence sees of one real sample."""
    return Evidence(spec.extract(result.text), result.token_logprobs, result.first_margin)


class Draws:
    """The generations calibration makes once per task, at the grid's largest budget and N.

    Each is drawn on first use, so a grid without sampling strategies draws no samples."""

    def __init__(self, runner: Runner, prompt_ids: List[int], spec: AnswerSpec, *, answer_tokens: int, n: int,
                 seed: int):
        self.runner, self.prompt_ids, self.spec = runner, prompt_ids, spec
        self.answer_tokens, self.n, self.seed = answer_tokens, n, seed
        self._samples: Dict[float, List[Prefix]] = {}

    @functools.cached_property
    def greedy(self) -> Prefix:
        params = SamplingParams(max_tokens=self.answer_tokens, stop=self.spec.stop)
        return Prefix(self.runner, self.runner.generate_ids(self.prompt_ids, params), self.spec.stop)

    def samples(self, temperature: float = SAMPLE_TEMPERATURE) -> List[Prefix]:
        """``n`` samples at ``temperature`` (drawn once per temperature)."""
        if temperature not in self._samples:
            params = SamplingParams(max_tokens=self.answer_tokens, temperature=temperature, top_p=SAMPLE_TOP_P,
                                    seed=self.seed, stop=self.spec.stop)
            self._samples[temperature] = [Prefix(self.runner, s, self.spec.stop)
                                          for s in self.runner.generate_many(self.prompt_ids, self.n, params)]
        return self._samples[temperature]


class Strategy:
    """Base of the strategies; subclasses register by name.

    A grid (calibration's ``Grid``) has ``answer_tokens``, ``think_tokens`` and ``ns``."""

    name: ClassVar[str] = ""
    registry: ClassVar[Dict[str, Type["Strategy"]]] = {}
    multi_sample: ClassVar[bool] = False  # draws several samples (n > 1 allowed)
    uses_thinking: ClassVar[bool] = False  # has a thinking budget (think_tokens > 0 required)
    #: N when a caller names the strategy without one
    DEFAULT_N: ClassVar[int] = 5

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            Strategy.registry[cls.name] = cls

    def schedule(self, config: Config, prompt_tokens: int) -> List[Phase]:
        """The most work ``config`` does for a prompt of ``prompt_tokens`` tokens."""
        raise NotImplementedError

    def run(self, runner: Runner, prompt_ids: List[int], config: Config, spec: AnswerSpec, deadline: Deadline,
            cancel: CancelToken, seed: Optional[int] = None, reserve_s: Optional[Callable[[int], float]] = None) -> StrategyOutcome:
        """Answer by ``deadline``. reserve_s(answer_tokens): the time an answer phase needs
        (from the latency model; None: the runner's observed step time)."""
        raise NotImplementedError

    @classmethod
    def default_config(cls, variant: str, max_tokens: int, n: Optional[int] = None,
                       think_tokens: Optional[int] = None, temperature: Optional[float] = None) -> Config:
        """The configuration a caller means by naming this strategy (``max_tokens`` being
        the answer budget; a thinking budget defaults to twice that; a temperature above 0
        sets a sampling strategy's, 0 or None leaves its default)."""
        return Config(variant, cls.name, max_tokens, n=(n or cls.DEFAULT_N) if cls.multi_sample else 1,
                      think_tokens=(think_tokens or 2 * max_tokens) if cls.uses_thinking else 0,
                      temperature=temperature if cls.multi_sample and temperature else None)

    def grid_configs(self, grid, variant: str, answer_tokens: int) -> List[Config]:
        """The configurations of this strategy that calibration measures at one answer budget."""
        if self.uses_thinking:
            return [Config(variant, self.name, answer_tokens, think_tokens=t) for t in grid.think_tokens]
        if self.multi_sample:
            temperatures = getattr(grid, "temperatures", ()) or (None,)
            return [Config(variant, self.name, answer_tokens, n=n, temperature=t) for t in temperatures for n in grid.ns]
        return [Config(variant, self.name, answer_tokens)]

    def replay(self, draws: Draws, grid, variant: str) -> Iterator[Trial]:
        """Every grid configuration of this strategy on one task, read off ``draws``."""
        raise NotImplementedError

    def confidence(self, outcome: StrategyOutcome, spec: AnswerSpec) -> Signals:
        """The confidence signals of a real run's answer (one answer sample: the last)."""
        return signals([evidence_of(outcome.samples[-1], spec)] if outcome.samples else [], outcome.answer)

    @staticmethod
    def _sampling(config: Config, spec: AnswerSpec, seed: Optional[int], greedy: bool) -> SamplingParams:
        if greedy:
            return SamplingParams(max_tokens=config.answer_tokens, temperature=0.0, stop=spec.stop,
                                  constraint=spec.constraint)
        return SamplingParams(max_tokens=config.answer_tokens, temperature=config.sample_temperature, top_p=SAMPLE_TOP_P,
                              seed=seed if seed is not None else 0, stop=spec.stop, constraint=spec.constraint)


def strategy(name: str) -> Strategy:
    """The registered strategy called ``name``."""
    if name not in Strategy.registry:
        raise UsageError(f"unknown strategy {name!r}; expected one of {', '.join(Strategy.registry)}")
    return Strategy.registry[name]()


def valid(samples: Sequence[GenerationResult]) -> List[GenerationResult]:
    """The samples that satisfy the request's constraint (all of them without one; all of
    them when none does, so that an answer is still returned, flagged unsatisfied)."""
    good = [s for s in samples if s.constraint_satisfied is not False]
    return good or list(samples)


def finish_reason(samples: Sequence[GenerationResult]) -> str:
    reasons = {s.finish_reason for s in samples}
    for reason in ("cancelled", "deadline"):
        if reason in reasons:
            return reason
    return samples[0].finish_reason if samples else "deadline"


def sub_deadline(deadline: Deadline, reserve_s: float) -> Optional[Deadline]:
    """A deadline ``reserve_s`` earlier than ``deadline`` (None when that has passed)."""
    if deadline.at is None:
        return deadline
    remaining = deadline.at - time.monotonic() - reserve_s
    return Deadline(remaining) if remaining > 0 else None
