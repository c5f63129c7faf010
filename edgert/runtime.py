"""The runtime an application embeds: plan each request, run it, answer by the deadline.

``Runtime.generate(prompt, deadline_s=..., power_w=..., strategy="auto")`` asks the planner
for the configuration with the highest expected accuracy that fits the request's limits
(needs the bundle's accuracy table and a device profile), runs that strategy, and returns
the answer with telemetry. Observed step times update the latency model online, so a
device that slows down (throttling, a busy CPU, a lower power mode) gets smaller plans.
Each request can append a decision record to a JSONL trace.

When the plan is a per-prompt policy (``edgert.policies``), the runtime answers with its
first configuration, reads the answer's confidence, and escalates to the second only when
the answer is unsure and the second stage is predicted to finish in the time left;
otherwise, or when the second stage produces no answer by the deadline, the first answer
stands. Each stage is recorded in the result (``stages``) and the trace.

Without ``strategy`` the runtime simply generates with the given variant and sampling
settings (the deadline still holds).

(Over 400 lines: one request's whole path — planning, loading within the deadline, the
stages of a policy, power, energy and the trace — reads best in one place.)
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from .answers import AnswerSpec
from .calibrate import task_set_for
from .bundle import Bundle, Variant
from .chat_template import Prompt, ThinkingFormat
from .devices import power_knob as find_power_knob
from .devices.base import EnergyMeter, PowerKnob
from .devices.cpu import default_threads
from .devices.state import StateReader
from .errors import DeadlineError, DeviceError, EdgertError
from .formats import memory_estimate
from .memory import check_fits
from .planner import Limits, plan
from .policies import Cascade
from .profiler.online import LatencyCorrector
from .profiler.profile import DeviceProfile
from .request import Request
from .result import RuntimeResult
from .runners.base import Runner
from .runners.registry import open_runner
from .runners.types import CancelToken, Deadline, TokenCallback
from .strategies import FORCED_CLOSE_TOKENS, Config, Signals, StrategyOutcome, strategy as get_strategy
from .tasks import Task, TaskSet, prepare_task, task_set_name

#: assumed artifact read + verify + load speed when a variant has not been loaded yet (estimate)
LOAD_BYTES_PER_S = 250e6

RunnerFactory = Callable[[Bundle, Variant, int, int], Runner]


def _default_factory(bundle: Bundle, variant: Variant, n_ctx: int, n_threads: int) -> Runner:
    return open_runner(bundle, variant, n_ctx=n_ctx, n_threads=n_threads)


class Runtime:
    """Answers prompts from a bundle; thread-safe ``cancel()``; one request at a time.

    profile: a DeviceProfile (or its path) for ``strategy="auto"``; trace_path: JSONL file
    that receives one decision record per request; sensor: a devices Sensor to measure
    energy with (otherwise energy is estimated from the profile and labelled so);
    power_knob: a device-wide power setting moved to honour each request's power_w (a
    ``devices`` PowerKnob: Jetson power modes, the NVIDIA power limit), or "auto" for the
    knob of the detected device (``edgert.devices.power_knob``; none on a plain CPU, where
    the planner's thread count is the knob); runner_factory: builds runners (tests use it to slow one down);
    device_state: a ``devices.state.StateReader`` read at the start of every request ("auto":
    this machine's; None: not read). Its regime key switches the online latency correction.
    """

    def __init__(
        self,
        bundle: Union[Bundle, str, os.PathLike],
        variant: Optional[str] = None,
        *,
        n_ctx: int = 2048,
        n_threads: Optional[int] = None,
        profile: Any = None,
        trace_path: Optional[Union[str, os.PathLike]] = None,
        sensor: Any = None,
        target: float = 0.95,
        runner_factory: Optional[RunnerFactory] = None,
        power_knob: Union[PowerKnob, str, None] = None,
        device_state: Union[StateReader, str, None] = "auto",
    ):
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(Path(bundle))
        self.default_variant = self.bundle.variant(variant).name
        self.n_ctx = n_ctx
        self.n_threads = n_threads or default_threads()
        if profile is not None and not hasattr(profile, "variants"):
            profile = DeviceProfile.load(Path(profile))
        self.profile = profile
        self.trace_path = Path(trace_path) if trace_path is not None else None
        self.sensor = sensor
        self.target = target
        self._factory = runner_factory or _default_factory
        self.power_knob: Optional[PowerKnob] = find_power_knob() if power_knob == "auto" else power_knob
        self._runners: Dict[str, Runner] = {}
        self._load_ms: Dict[str, float] = {}
        self._last: Optional[str] = None
        #: the online half of the latency model: corrections and spread learned per request
        self.latency = LatencyCorrector(profile, target)
        self._lock = threading.Lock()
        self._cancel: Optional[CancelToken] = None
        self._requests = 0
        self.last_plan = None  # the planner's full answer for the last "auto" request
        self._task_sets: Dict[str, TaskSet] = {}
        self._memory_estimates: Dict[tuple, Any] = {}
        self.state_reader: Optional[StateReader] = StateReader() if device_state == "auto" else device_state

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for runner in self._runners.values():
            runner.close()
        self._runners.clear()
        self._last = None

    # ------------------------------------------------------------------ runners
    def load(self, variant: Optional[str] = None, *, constraints: bool = False) -> float:
        """Verify and load a variant (the default one if None); return the load time in ms
        (0 when it was already loaded). Loaded variants stay loaded.

        constraints: also build the variant's constrained-decoding tokenizer now (0.2-1 s),
        so that the first request with a constraint does not spend its deadline on it."""
        chosen = self.bundle.variant(variant or self.default_variant)
        self._last = chosen.name
        if chosen.name in self._runners:
            if constraints:
                started = time.perf_counter()
                self._runners[chosen.name].guide()
                return (time.perf_counter() - started) * 1000
            return 0.0
        start = time.perf_counter()
        n_ctx = min(self.n_ctx, chosen.context_length or self.n_ctx)
        self._check_memory(chosen, n_ctx)
        runner = self._factory(self.bundle, chosen, n_ctx, self.n_threads)
        runner.load()
        if constraints:
            runner.guide()
        self._runners[chosen.name] = runner
        self._load_ms[chosen.name] = (time.perf_counter() - start) * 1000
        return self._load_ms[chosen.name]

    def loaded(self) -> List[str]:
        """Names of the variants in memory."""
        return sorted(self._runners)

    def preload(self, variants: Optional[Sequence[str]] = None, *, constraints: bool = False) -> Dict[str, float]:
        """Load several variants ahead of requests (all calibrated ones by default);
        constraints: with their constrained-decoding tokenizers (see ``load``)."""
        names = list(variants) if variants else sorted({str(r["variant"]) for r in self.bundle.manifest.accuracy_table}
                                                      or {self.default_variant})
        return {name: self.load(name, constraints=constraints) for name in names}

    def _check_memory(self, variant: Variant, n_ctx: int) -> None:
        key = (variant.name, n_ctx)
        if key not in self._memory_estimates:  # the file is read once; available memory is read each time
            # llama.cpp's unified KV cache: n_ctx cells shared by all sequences
            self._memory_estimates[key] = memory_estimate(variant.format, self.bundle.path_of(variant), n_ctx)
        check_fits(self._memory_estimates[key])

    def _memory_exclusions(self) -> Dict[str, str]:
        """Variants the planner must leave out because loading them would not fit."""
        excluded: Dict[str, str] = {}
        for variant in self.bundle.variants:
            if variant.name in self._runners:
                continue
            try:
                self._check_memory(variant, min(self.n_ctx, variant.context_length or self.n_ctx))
            except EdgertError as exc:  # InsufficientMemoryError: the message names the numbers
                excluded[variant.name] = str(exc)
        return excluded

    def forget_cache(self) -> None:
        """Make the next request evaluate its prompt from scratch (benchmarks of cold requests)."""
        for runner in self._runners.values():
            runner.forget_cache()

    @property
    def runner(self) -> Optional[Runner]:
        """The runner of the variant used last."""
        return self._runners.get(self._last) if self._last else None

    def token_bytes(self, variant: str, token: int) -> bytes:
        """A token's bytes in a loaded variant's vocabulary (for log-probabilities by token)."""
        return self._runners[variant].token_bytes(token)

    def variant(self, name: Optional[str] = None) -> Variant:
        return self.bundle.variant(name or self.default_variant)

    # --------------------------------------------------------------- requests
    def generate(self, prompt: Prompt, *, on_token: Optional[TokenCallback] = None,
                 cancel_token: Optional[CancelToken] = None, **fields: Any) -> RuntimeResult:
        """Answer ``prompt``: ``run(Request(prompt, **fields))``. The fields are those of
        ``edgert.request.Request`` (deadline_s, power_w, energy_j, strategy, max_tokens,
        temperature, top_p, seed, stop, variant, n, think_tokens, answer_type, choices,
        pattern, task_set, chat, system, ignore_eos, started_at)."""
        return self.run(Request(prompt, **fields), on_token=on_token, cancel_token=cancel_token)

    def run(self, request: Request, *, on_token: Optional[TokenCallback] = None,
            cancel_token: Optional[CancelToken] = None) -> RuntimeResult:
        """Answer a request by its deadline (counted from ``request.started_at`` or now;
        loading a model counts against it).

        on_token(piece, token_id): streaming, plain runs only; cancel_token: a CancelToken the
        caller keeps to stop this request (``cancel()`` stops whichever request is running).
        """
        request.check(has_profile=self.profile is not None)
        deadline = Deadline(request.deadline_s, start=request.started_at)
        with self._lock:
            self._cancel = cancel = cancel_token or CancelToken()
            try:
                return self._execute(request, deadline, cancel, on_token)
            finally:
                self._cancel = None

    def cancel(self) -> None:
        """Stop the request in progress from another thread; it returns what it has."""
        token = self._cancel
        if token is not None:
            token.cancel()

    def _load_within(self, name: str, deadline: Deadline) -> float:
        load_ms = self.load(name)
        if deadline.expired() and load_ms > 0:  # (already loaded: the runner returns an empty, cut answer)
            raise DeadlineError(
                f"the deadline of {deadline.seconds * 1000:.0f} ms is shorter than loading the model "
                f"({load_ms:.0f} ms); call Runtime.load() first or allow more time"
            )
        return load_ms

    def _ready(self, name: str, threads: int, deadline: Deadline, constrained: bool = False) -> Tuple[Runner, float]:
        """The runner of ``name`` at ``threads``, loaded within the deadline (with its
        constrained-decoding tokenizer when ``constrained``); and the load time."""
        load_ms = self._load_within(name, deadline)
        runner = self._runners[name]
        if constrained and not runner.has_guide:
            build_ms = self.load(name, constraints=True)  # loaded already: this builds the tokenizer
            load_ms += build_ms
            if deadline.expired():
                raise DeadlineError(
                    f"the deadline of {deadline.seconds * 1000:.0f} ms is shorter than building the constraint "
                    f"tokenizer of {name} ({build_ms:.0f} ms, once per model); call Runtime.load(constraints=True) "
                    "first or allow more time")
        if runner.n_threads != threads:
            runner.set_threads(threads)
        return runner, load_ms

    # ---------------------------------------------------------------- one request
    def _execute(self, request: Request, deadline: Deadline, cancel: CancelToken, on_token) -> RuntimeResult:
        """Choose the configuration (plan, a named strategy, or none), ensure its runner, run
        it, escalate if the plan is a cascade and the answer is unsure, learn from the step
        times, and build the result."""
        state, state_note = self._read_state()
        plan_dict = None
        prepared: Dict[str, tuple] = {}
        config: Optional[Config] = None
        policy: Optional[Cascade] = None
        if request.planned:
            config, plan_dict, prepared, policy = self._plan(request, deadline)
        elif request.strategy is not None:
            config = get_strategy(request.strategy).default_config(self.variant(request.variant).name,
                                                                   request.max_tokens, request.n, request.think_tokens,
                                                                   request.temperature)
        name = config.variant if config is not None else self.variant(request.variant).name
        setting, warnings = self._apply_power(request.power_w) if config is not None else (None, [])
        meter = self._meter()
        if config is None:  # plain: the request's own sampling settings, streamed
            threads = self.n_threads
            runner, load_ms = self._ready(name, threads, deadline, request.constraint is not None)
            if request.completions > 1:
                ids = runner.encode(request.prompt, chat=request.chat, system=request.system, tools=request.tools)
                completions = runner.generate_many(ids, request.completions, request.sampling, deadline=deadline,
                                                   cancel=cancel)
                result = completions[0]
            else:
                result = runner.generate(request.prompt, request.sampling, deadline=deadline, on_token=on_token,
                                         cancel=cancel, chat=request.chat, system=request.system, tools=request.tools)
                completions = []
            outcome = StrategyOutcome(None, result.text, result.finish_reason, [result])
            self.latency.observe(name, threads, outcome.steps)
            ids: List[int] = []
            stages: List[Dict[str, Any]] = []
            energy_parts = [(name, threads, deadline.elapsed_s() * 1000 - load_ms)]
        else:
            completions = []
            stage = self._stage(config, request, deadline, cancel, prepared)
            outcome, ids, load_ms, threads = stage.outcome, stage.ids, stage.load_ms, stage.threads
            energy_parts = [(name, threads, stage.ms - stage.load_ms)]
            stages = [stage.record("answered")] if policy is not None else []
            if policy is not None:
                decision = self._escalation(policy, stage, plan_dict, deadline, cancel)
                stages[0]["decision"] = decision
                if decision == "escalated":
                    second = self._stage(policy.then, request, deadline, cancel, prepared)
                    stages.append(second.record("answered" if second.outcome.answer is not None else "no answer; kept the first"))
                    energy_parts.append((policy.then.variant, second.threads, second.ms - second.load_ms))
                    load_ms += second.load_ms
                    if second.outcome.answer is not None:
                        name, config, ids, threads = policy.then.variant, policy.then, second.ids, second.threads
                        outcome = second.outcome.merged_with(outcome)
                    else:
                        outcome = outcome.merged_with(second.outcome)
        latency_ms = deadline.elapsed_s() * 1000
        measured = meter.stop() if meter is not None else None
        main = outcome.samples[-1] if outcome.samples else self._runners[name].empty_result(ids, "deadline", deadline)
        out = RuntimeResult(
            text=outcome.text, variant=name, finish_reason=outcome.finish_reason, latency_ms=latency_ms,
            load_ms=load_ms, generation=main, deadline_s=deadline.seconds, answer=outcome.answer,
            config=None if config is None else config.to_dict(), plan=plan_dict, samples=outcome.samples,
            votes=outcome.votes, forced=outcome.forced, threads=threads, power_setting=setting, warnings=warnings,
            stages=stages, completions=completions, device_state=state,
        )
        if state_note:
            out.warnings.append(state_note)
        if request.constraint is not None:
            self._settle_constraint(out, request)
        if plan_dict is not None and not plan_dict["feasible"]:
            out.warnings.append(plan_dict["reason"])
        if measured is not None:
            out.energy_j, out.energy_provenance = measured.energy_j, measured.provenance
        else:
            parts = [self.latency.estimate_energy(v, t, ms) for v, t, ms in energy_parts]
            out.energy_j = None if any(j is None for j, _ in parts) else sum(j for j, _ in parts)
            out.energy_provenance = parts[0][1]
        self._trace(out)
        return out

    def _read_state(self) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
        """The device state now, and a note when its regime changed since the last request (the
        latency correction then switches to what it learned in the new regime)."""
        if self.state_reader is None:
            return None, None
        state = self.state_reader.read()
        before = self.latency.state_key
        if self.latency.enter_state(state.key()):
            return state.to_dict(), (f"device state changed ({before} -> {state.key()}): latency corrections "
                                     "switched to those learned in the new state")
        return state.to_dict(), None

    @staticmethod
    def _settle_constraint(out: RuntimeResult, request: Request) -> None:
        """Whether the answer meets the request's constraint (the sample it came from says);
        one that does not is flagged, and replaced by the request's fallback if it has one."""
        chosen = next((s for s in reversed(out.samples or [out.generation]) if s.text == out.text), out.generation)
        out.constraint = request.constraint.describe()
        out.constraint_satisfied = bool(chosen.constraint_satisfied)
        if chosen is not out.generation:
            out.generation = chosen
        if not out.constraint_satisfied:
            out.warnings.append("the answer does not satisfy the constraint"
                                + ("; the request's fallback was returned" if request.fallback is not None else ""))
            if request.fallback is not None:
                out.text, out.answer, out.fallback_used = request.fallback, request.fallback, True

    def _stage(self, config: Config, request: Request, deadline: Deadline, cancel: CancelToken,
               prepared: Dict[str, tuple]) -> "_Stage":
        """Run one configuration (loading its runner if needed; that counts against the
        deadline) and learn from its step times."""
        started = deadline.elapsed_s()
        name = config.variant
        threads = config.threads or self.n_threads
        runner, load_ms = self._ready(name, threads, deadline, request.constraint is not None)
        if name not in prepared:
            prepared[name] = self._prepare(runner, request)
        ids, spec = prepared[name]
        reserve = self.latency.reserve_fn(name, threads, len(ids) + config.think_tokens, FORCED_CLOSE_TOKENS)
        family = get_strategy(config.strategy)
        outcome = family.run(runner, ids, config, spec, deadline, cancel, seed=request.seed, reserve_s=reserve)
        self.latency.observe(name, threads, outcome.steps)
        return _Stage(config, outcome, family.confidence(outcome, spec), ids, load_ms, threads,
                      (deadline.elapsed_s() - started) * 1000)

    def _escalation(self, policy: Cascade, first: "_Stage", plan_dict: Dict[str, Any], deadline: Deadline,
                    cancel: CancelToken) -> str:
        """Whether a cascade's second stage runs: the answer is unsure, and the second stage
        is predicted to finish in the time left (otherwise the answer in hand is returned)."""
        if not policy.escalates(first.signals):
            return "confident"
        if cancel.cancelled:
            return "unsure; cancelled"
        need_ms = float(plan_dict.get("then_bound_ms") or 0.0)  # loading it, if needed, included
        left_ms = deadline.remaining_s() * 1000
        if left_ms < need_ms:
            return f"unsure; {left_ms:.0f} ms left, escalation needs {need_ms:.0f} ms"
        return "escalated"

    # ----------------------------------------------------------------- planning
    def _prepare(self, runner: Runner, request: Request):
        """Token ids and answer spec of a request. With a task set, the question is asked the
        way calibration asked it (chat models: with the answer instruction; base models:
        few-shot), so the accuracy the planner expects is the one measured."""
        if request.task_set is None:
            ids = runner.encode(request.prompt, chat=request.chat, system=request.system, tools=request.tools)
            return ids, AnswerSpec(kind=request.answer_type, choices=request.choices, pattern=request.pattern,
                                   stop=request.stop, thinking=ThinkingFormat.for_template(runner.chat_template_source),
                                   constraint=request.constraint)
        tasks = self._task_set(request.task_set)
        kind = request.answer_type or (tasks.tasks[0].type if tasks.tasks else "text")
        task = Task(id="request", prompt=request.prompt, answer="", type=kind, choices=request.choices,
                    pattern=request.pattern)
        ids, spec = prepare_task(runner, task, tasks.shots(), request.stop)
        return ids, replace(spec, constraint=request.constraint)

    def _task_set(self, source: str) -> TaskSet:
        if source not in self._task_sets:
            self._task_sets[source] = task_set_for(self.bundle, source)
        return self._task_sets[source]

    def _plan(self, request: Request, deadline: Deadline):
        if not self._runners:
            self._load_within(self.default_variant, deadline)
        excluded = self._memory_exclusions()
        prepared: Dict[str, tuple] = {}  # (ids, spec) per loaded variant, reused by the run
        for variant in self.bundle.variants:
            runner = self._runners.get(variant.name)
            if request.task_set is None and request.chat and not variant.chat_template:
                excluded.setdefault(variant.name, "no chat template (ask with a task set, or chat=False)")
            if runner is not None:
                prepared[variant.name] = self._prepare(runner, request)
        lengths = {name: len(ids) for name, (ids, _spec) in prepared.items()}
        fallback = max(lengths.values()) if lengths else max(1, len(str(request.prompt)) // 3)
        extra_ms = {v.name: v.size_bytes / LOAD_BYTES_PER_S * 1000 for v in self.bundle.variants if v.name not in self._runners}
        limits = Limits(max(deadline.remaining_s(), 1e-3), power_w=request.power_w, energy_j=request.energy_j,
                        target=self.target, prompt_tokens=fallback)
        result = plan(self.bundle.manifest.accuracy_table, self.profile, limits, task_set=self._task_set_name(request),
                      corrections=self.latency.planner_corrections(), extra_ms=extra_ms, excluded=excluded,
                      prompt_tokens=lengths, sigma=self.latency.sigmas(), policies=self.bundle.manifest.policy_table)
        self.last_plan = result
        choice = result.choice
        summary = {
            "feasible": result.feasible, "reason": result.reason, "planning_ms": round(result.planning_ms, 3),
            "predicted_latency_ms": round(choice.latency_ms, 1), "latency_bound_ms": round(choice.latency_bound_ms, 1),
            "predicted_power_w": round(choice.power_w, 2), "expected_accuracy": round(choice.accuracy, 4),
            "prompt_tokens": lengths.get(choice.config.variant, fallback), "estimated": choice.estimated,
            "label": choice.label,
        }
        if choice.policy is not None:
            summary.update(policy=choice.policy.to_dict(), escalated_share=choice.escalated_share,
                           then_bound_ms=round(choice.then_bound_ms, 1))
        return choice.config, summary, prepared, choice.policy

    def _task_set_name(self, request: Request) -> Optional[str]:
        """The name calibration stored the request's task set under (a JSONL path's task set
        is named by its file, as ``edgert calibrate --tasks FILE`` names it)."""
        return None if request.task_set is None else task_set_name(request.task_set)

    def _apply_power(self, power_w: Optional[float]):
        """Move the device's power knob for this request's limit; a knob that cannot act is
        reported in the result's warnings, never a failed request."""
        if self.power_knob is None:
            return None, []
        try:
            return self.power_knob.apply_limit(power_w).label, []
        except DeviceError as exc:
            return None, [str(exc)]

    def _meter(self) -> Optional[EnergyMeter]:
        if self.sensor is None or getattr(self.sensor, "provenance", "") != "measured":
            return None
        meter = EnergyMeter(self.sensor)
        meter.start()
        return meter

    # -------------------------------------------------------------------- trace
    def _trace(self, result: RuntimeResult) -> None:
        self._requests += 1
        if self.trace_path is None:
            return
        record = {"time": time.time(), "request": self._requests, **result.trace_record(),
                  "corrections": {k: round(v, 4) for k, v in self.latency.corrections.items()},
                  "sigma": {k: round(v, 4) for k, v in self.latency.sigmas().items()}}
        self.trace_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.trace_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


@dataclass
class _Stage:
    """One configuration's run within a request."""

    config: Config
    outcome: StrategyOutcome
    signals: Signals
    ids: List[int]
    load_ms: float
    threads: int
    ms: float  # wall time of the stage, loading included

    def record(self, decision: str) -> Dict[str, Any]:
        return {"config": self.config.key, "answer": self.outcome.answer, "signals": self.signals,
                "latency_ms": round(self.ms, 2), "finish_reason": self.outcome.finish_reason, "decision": decision}

