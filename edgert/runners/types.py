"""The plain data a request, a runner and a strategy exchange: no engine, no model.

Deadline and CancelToken are the two controls of a generation; SamplingParams what to draw;
GenerationResult what came back, with its StepRecords (the telemetry the latency model learns
from). The runtime, the strategies and the server use these without importing the Runner.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from ..errors import UsageError

#: generation stops this long before the deadline, so that stopping (an abort inside
#: llama.cpp) and returning the result land before it. Measured on the 2-core VM (pareto
#: runs): deadline-cut requests returned 1-3 ms after the stop point typically, 6.4 ms at
#: worst of 128 (bench/results/pareto-20261124-032403), which a 4 ms margin let through
RETURN_MARGIN_S = 0.010

#: why a generation ended; "dropped" marks a sample a strategy no longer needed (its vote was decided)
FINISH_REASONS = ("stop", "eos", "length", "deadline", "cancelled", "dropped")


def is_finite(value) -> bool:
    """math.isfinite, but False for an int too large for a float (10**400) instead of raising."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


class Deadline:
    """A wall-clock deadline on the monotonic clock. ``Deadline(None)`` never expires."""

    def __init__(self, seconds: Optional[float], start: Optional[float] = None):
        if seconds is not None and (not is_finite(seconds) or seconds <= 0):
            raise UsageError(f"deadline must be a positive number of seconds, found {seconds!r}")
        self.start = time.monotonic() if start is None else start
        self.seconds = seconds
        self.at = None if seconds is None else self.start + seconds

    def remaining_s(self) -> float:
        return math.inf if self.at is None else self.at - time.monotonic()

    def expired(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at

    def elapsed_s(self) -> float:
        return time.monotonic() - self.start


class CancelToken:
    """Thread-safe cancellation flag: another thread calls ``cancel()``."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


class StepRecord(NamedTuple):
    kind: str  # "prefill" / "prefill-cut" (stopped by the deadline): tokens; "decode": sequences in the batch
    size: int
    context: int
    ms: float


@dataclass
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: Optional[int] = None
    stop: Sequence[str] = ()
    ignore_eos: bool = False  # never end at EOS (tests of runaway generation, fixed-length runs)
    #: the answer's required shape (an ``edgert.constraint.Constraint``), masked token by token
    constraint: Any = None
    #: token id -> value added to its logit (OpenAI's logit_bias, -100..100)
    logit_bias: Optional[Dict[int, float]] = None
    #: subtracted from the logit of every token already drawn / per time drawn (OpenAI's, -2..2)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    #: keep this many most likely alternatives per token drawn (0: none)
    top_logprobs: int = 0

    def check(self) -> None:
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise UsageError(f"max_tokens must be a positive integer, found {self.max_tokens!r}", field="max_tokens")
        if not (isinstance(self.temperature, (int, float)) and self.temperature >= 0 and is_finite(self.temperature)):
            raise UsageError(f"temperature must be >= 0, found {self.temperature!r}", field="temperature")
        if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise UsageError(f"top_p must be in (0, 1], found {self.top_p!r}", field="top_p")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise UsageError(f"stop strings must be non-empty strings, found {list(self.stop)!r}", field="stop")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0):
            raise UsageError(f"seed must be a non-negative integer, found {self.seed!r}", field="seed")
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not is_finite(value) or not -2 <= value <= 2:
                raise UsageError(f"{name} must be a number between -2 and 2, found {value!r}", field=name)
        if self.logit_bias is not None:
            if not isinstance(self.logit_bias, dict) or not all(
                    isinstance(k, int) and not isinstance(k, bool) and k >= 0 and isinstance(v, (int, float))
                    and not isinstance(v, bool) and is_finite(v) and -100 <= v <= 100 for k, v in self.logit_bias.items()):
                raise UsageError("logit_bias must map token ids (non-negative integers) to numbers between -100 "
                                 f"and 100, found {self.logit_bias!r:.80}", field="logit_bias")
        if isinstance(self.top_logprobs, bool) or not isinstance(self.top_logprobs, int) or not 0 <= self.top_logprobs <= 20:
            raise UsageError(f"top_logprobs must be an integer between 0 and 20, found {self.top_logprobs!r}",
                             field="top_logprobs")


@dataclass
class GenerationResult:
    """The generated text and what it cost."""

    text: str
    finish_reason: str
    tokens_in: int
    tokens_out: int
    prefill_ms: float
    decode_step_ms: List[float]
    total_ms: float
    deadline_s: Optional[float] = None
    token_ids: List[int] = field(default_factory=list)
    token_logprobs: List[float] = field(default_factory=list)
    cached_tokens: int = 0  # prompt tokens found in the cache and not evaluated again
    #: logit of the most likely first token minus that of the second (a confidence signal;
    #: None when no token was sampled)
    first_margin: Optional[float] = None
    #: with a constraint: whether the text is a complete, valid answer (None: no constraint)
    constraint_satisfied: Optional[bool] = None
    #: with a constraint: ms per token to compute and apply its mask; tokens appended to
    #: close the structure when time or tokens ran out (no model step each)
    mask_ms: List[float] = field(default_factory=list)
    closed_tokens: int = 0
    #: per token, its most likely alternatives (token id, log-probability), when asked
    top_logprobs: List[List[Tuple[int, float]]] = field(default_factory=list)
    #: the engine evaluations of the call that produced this result, for the latency model
    #: (the results of one generate_many call share one list)
    steps: List[StepRecord] = field(default_factory=list)

    @property
    def deadline_cut(self) -> bool:
        return self.finish_reason == "deadline"

    @property
    def decode_ms(self) -> float:
        return float(sum(self.decode_step_ms))

    @property
    def decode_tokens_per_s(self) -> float:
        steps = len(self.decode_step_ms)
        return steps / (self.decode_ms / 1000) if steps and self.decode_ms > 0 else 0.0

    @property
    def mean_logprob(self) -> float:
        return float(np.mean(self.token_logprobs)) if self.token_logprobs else float("-inf")


#: on_token(text_piece, token_id) — called for every emitted piece of text
TokenCallback = Callable[[str, int], None]
