"""What one request asks of the runtime, checked once.

A ``Request`` is built by the Python API (``Runtime.generate``), the CLI (``edgert run``)
and the server (``edgert serve``), and run by ``Runtime.run(request)``. ``check()`` holds
every rule about a request's fields; the runtime adds only the rules that need its state
(a device profile for ``strategy="auto"``, a variant the bundle has).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Dict, Mapping, Optional, Tuple

from .answers import ANSWER_TYPES
from .chat_template import Prompt, message_ok
from .constraint import Constraint
from .errors import UsageError
from .runners.types import SamplingParams, is_finite
from .strategies import Strategy

#: the planner chooses variant, strategy, N, budgets and threads
AUTO = "auto"
#: the request's limits (each a positive number in the unit its name ends in)
LIMITS = ("deadline_s", "power_w", "energy_j")
#: how messages name fields for Python callers (the CLI and the server pass their own names)
API_NAMES = {
    "deadline_s": "deadline", "power_w": "power limit", "energy_j": "energy limit", "strategy": "strategy",
    "profile": "a device profile (make one with edgert profile)", "auto_deadline": "a deadline",
}
_UNITS = {"s": "seconds", "w": "watts", "j": "joules"}


def name_unit(field_name: str) -> str:
    """The unit a field's name ends in, spelled out (``power_w`` -> watts)."""
    return _UNITS[field_name.rsplit("_", 1)[1]]


@dataclass(frozen=True)
class Request:
    """One call: the prompt, its limits, sampling, the strategy to use and what answer it wants.

    prompt: a string, or a list of ``{"role", "content"}`` messages (chat only).
    deadline_s: seconds from ``started_at`` (or from when the run starts); None: no deadline.
    power_w: a power limit: the planner's (``strategy="auto"``), and the device power knob's
    position (with a named strategy too). energy_j: a limit for the planner only.
    strategy: None generates plainly with the sampling settings; "auto" plans; a strategy
    name (see ``edgert.strategies``) runs that strategy with ``variant``, ``n`` and
    ``think_tokens``, ``max_tokens`` being its answer budget.
    answer_type (number, choice, text, regex), choices, pattern: how answers are extracted
    and voted on. task_set: ask the question the way calibration asked that task set.
    constraint: the answer's required shape (``edgert.constraint.Constraint``), decoded under
    token masks; the result says whether it was met (``constraint_satisfied``), and if it was
    not, ``fallback`` (a text) is returned instead when given.
    tools: OpenAI-style tool definitions shown to the model through its chat template (the
    server constrains a tool call's arguments with ``constraint``).
    logit_bias, presence_penalty, frequency_penalty, top_logprobs: OpenAI's sampling fields.
    completions: independent answers to return (OpenAI's ``n``; plain runs only), decoded
    together over the shared prompt cache.
    started_at: ``time.monotonic()`` when the request arrived (a queue's wait counts).
    """

    prompt: Prompt
    chat: bool = True
    system: Optional[str] = None
    deadline_s: Optional[float] = None
    power_w: Optional[float] = None
    energy_j: Optional[float] = None
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: Optional[int] = None
    stop: Tuple[str, ...] = ()
    ignore_eos: bool = False
    strategy: Optional[str] = None
    variant: Optional[str] = None
    n: Optional[int] = None
    think_tokens: Optional[int] = None
    answer_type: Optional[str] = None
    choices: Tuple[str, ...] = ()
    pattern: Optional[str] = None
    task_set: Optional[str] = None
    constraint: Optional[Constraint] = None
    fallback: Optional[str] = None
    tools: Tuple[Dict[str, Any], ...] = ()
    logit_bias: Optional[Dict[int, float]] = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    top_logprobs: int = 0
    completions: int = 1
    started_at: Optional[float] = None

    def __post_init__(self) -> None:  # sequences given as lists become tuples (the request is frozen)
        object.__setattr__(self, "stop", tuple(self.stop or ()))
        object.__setattr__(self, "choices", tuple(self.choices or ()))
        object.__setattr__(self, "tools", tuple(self.tools or ()))

    @property
    def planned(self) -> bool:
        return self.strategy == AUTO

    @property
    def sampling(self) -> SamplingParams:
        """The sampling settings of a plain run."""
        return SamplingParams(max_tokens=self.max_tokens, temperature=self.temperature, top_p=self.top_p,
                              seed=self.seed, stop=self.stop, ignore_eos=self.ignore_eos, constraint=self.constraint,
                              logit_bias=self.logit_bias, presence_penalty=self.presence_penalty,
                              frequency_penalty=self.frequency_penalty, top_logprobs=self.top_logprobs)

    def with_(self, **changes) -> "Request":
        return replace(self, **changes)

    def check(self, *, has_profile: Optional[bool] = None, names: Mapping[str, str] = API_NAMES) -> "Request":
        """Raise UsageError at the first rule the request breaks; return the request.

        has_profile: whether the runtime has a device profile (None: not known here).
        names: how the caller's users spell the fields (the CLI's options, the server's
        body keys), so that messages name what they typed."""
        def say(field_name: str) -> str:
            return names.get(field_name, API_NAMES.get(field_name, field_name))

        _check_prompt(self.prompt, self.chat)
        for name in LIMITS:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not is_finite(value) or value <= 0:
                raise UsageError(f"{say(name)} must be a positive number of {name_unit(name)}, found {value!r}",
                                 field=name)
        choices = (AUTO, *Strategy.registry)
        if self.strategy is not None and (not isinstance(self.strategy, str) or self.strategy not in choices):
            raise UsageError(f"{say('strategy')} must be one of {', '.join(choices)}, found {self.strategy!r}",
                             field="strategy")
        if self.strategy is None:
            extra = [name for name in ("power_w", "energy_j", "n", "think_tokens", "answer_type", "task_set",
                                       "pattern") if getattr(self, name) is not None]
            if extra:
                raise UsageError(f"{', '.join(map(say, extra))} need {say('strategy')} (auto or a strategy name: "
                                 f"{', '.join(choices)})", field=extra[0])
        elif self.strategy != AUTO and self.energy_j is not None:
            # a power limit with a named strategy still moves the device's power knob; an
            # energy limit only the planner can honour
            raise UsageError(f"{say('energy_j')} is a limit for the planner: use it with {say('strategy')} auto",
                             field="energy_j")
        if self.strategy == AUTO:
            if has_profile is False:
                raise UsageError(f"{say('strategy')} auto needs {say('profile')}", field="strategy")
            if self.deadline_s is None:
                raise UsageError(f"{say('strategy')} auto needs {say('auto_deadline')}", field="deadline_s")
        self.sampling.check()
        if self.constraint is not None:
            if not isinstance(self.constraint, Constraint):
                raise UsageError(f"constraint must be an edgert.constraint.Constraint, found {type(self.constraint).__name__}",
                                 field="constraint")
            self.constraint.check()
        if self.fallback is not None and not isinstance(self.fallback, str):
            raise UsageError(f"fallback must be a text, found {type(self.fallback).__name__}", field="fallback")
        if isinstance(self.completions, bool) or not isinstance(self.completions, int) or self.completions < 1:
            raise UsageError(f"{say('completions')} must be a positive integer, found {self.completions!r}",
                             field="completions")
        if self.completions > 1 and self.strategy is not None:
            raise UsageError(f"{say('completions')} > 1 returns independent answers of a plain run; with "
                             f"{say('strategy')} {self.strategy} the samples are voted into one answer (use n / samples)",
                             field="completions")
        for name in ("n", "think_tokens"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise UsageError(f"{say(name)} must be a positive integer, found {value!r}", field=name)
        if self.answer_type is not None and self.answer_type not in ANSWER_TYPES:
            raise UsageError(f"{say('answer_type')} must be one of {', '.join(ANSWER_TYPES)}, found {self.answer_type!r}",
                             field="answer_type")
        if self.answer_type == "regex" and self.task_set is None:
            _check_pattern(self.pattern, say("pattern"))
        if self.task_set is not None and not isinstance(self.prompt, str):
            raise UsageError("a request with a task set takes the question as a string, found a message list",
                             field="prompt")
        return self


def _check_pattern(pattern: Optional[str], name: str) -> None:
    """A regex answer needs a pattern that compiles (checked before any generation runs)."""
    if not isinstance(pattern, str) or not pattern:
        raise UsageError(f"answer type regex needs {name}, a regular expression; found {pattern!r}", field="pattern")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise UsageError(f"{name} must be a valid regular expression, found {pattern!r} ({exc})", field="pattern") from None


def _check_prompt(prompt: Prompt, chat: bool) -> None:
    if isinstance(prompt, str):
        return
    if not chat:
        raise UsageError("a raw (non-chat) prompt must be a string, found a message list", field="prompt")
    if not isinstance(prompt, (list, tuple)) or not prompt or not all(message_ok(m) for m in prompt):
        raise UsageError(f"prompt must be a string or a non-empty list of {{role, content}} messages, "
                         f"found {prompt!r:.80}", field="prompt")
