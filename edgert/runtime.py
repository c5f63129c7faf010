"""The runtime an application embeds: plan each request, run it, answer by the deadline.

``Runtime.generate(prompt, deadline_s=..., power_w=..., strategy="auto")`` asks the planner
for the configuration with the highest expected accuracy that fits the request's limits
(needs the bundle's accuracy table and a device profile), runs that strategy, and returns
the answer with telemetry. Observed step times update the latency model online, so a
device that slows down (throttling, a busy CPU, a lower power mode) gets smaller plans.
Each request can append a decision record to a JSONL trace.

Without ``strategy`` the runtime simply generates with the given variant and sampling
settings (the deadline still holds).
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Union

from .bundle import Bundle, Variant
from .chat_template import Prompt
from .errors import DeadlineError
from .request import Request
from .strategies import Config, strategy as get_strategy
from .runners.types import CancelToken, Deadline, GenerationResult, TokenCallback
from .devices.cpu import default_threads
from .runners.base import Runner
from .runners.registry import open_runner

#: weight of the newest observation in the online latency correction (per variant)
CORRECTION_ALPHA = 0.5
CORRECTION_RANGE = (0.25, 8.0)
#: how many observed requests the profile's sigma counts as (its weight against the runtime's
#: own observations), and how many recent observations the runtime keeps per variant
SIGMA_PRIOR_WEIGHT = 8
SIGMA_WINDOW = 64
#: observations needed before they count at all (fewer: a step change dominates the median)
SIGMA_MIN_OBSERVATIONS = 8
#: assumed artifact read + verify + load speed when a variant has not been loaded yet (estimate)
LOAD_BYTES_PER_S = 250e6

RunnerFactory = Callable[[Bundle, Variant, int, int], Runner]


@dataclass
class RuntimeResult:
    """An answer with its telemetry."""

    text: str
    variant: str
    finish_reason: str
    latency_ms: float
    load_ms: float
    generation: GenerationResult
    deadline_s: Optional[float] = None
    answer: Optional[str] = None
    config: Optional[Dict[str, Any]] = None
    plan: Optional[Dict[str, Any]] = None
    samples: List[GenerationResult] = field(default_factory=list)
    votes: Dict[str, int] = field(default_factory=dict)
    forced: bool = False
    energy_j: Optional[float] = None
    energy_provenance: str = "unknown"
    threads: Optional[int] = None
    power_setting: Optional[str] = None  # the device knob's position (Jetson mode, GPU limit)
    warnings: List[str] = field(default_factory=list)

    @property
    def deadline_cut(self) -> bool:
        return self.finish_reason == "deadline"

    @property
    def deadline_met(self) -> Optional[bool]:
        """Whether the answer arrived by the deadline (None when there was no deadline)."""
        if self.deadline_s is None:
            return None
        return self.latency_ms <= self.deadline_s * 1000

    @property
    def tokens_out(self) -> int:
        return sum(s.tokens_out for s in self.samples) if self.samples else self.generation.tokens_out

    def to_dict(self) -> Dict[str, object]:
        g = self.generation
        return {
            "text": self.text,
            "answer": self.answer,
            "variant": self.variant,
            "config": self.config,
            "finish_reason": self.finish_reason,
            "deadline_s": self.deadline_s,
            "deadline_met": self.deadline_met,
            "deadline_cut": self.deadline_cut,
            "latency_ms": round(self.latency_ms, 3),
            "load_ms": round(self.load_ms, 3),
            "threads": self.threads,
            "power_setting": self.power_setting,
            "warnings": self.warnings,
            "tokens_in": g.tokens_in,
            "tokens_out": self.tokens_out,
            "samples": len(self.samples) or 1,
            "votes": self.votes,
            "forced": self.forced,
            "energy_j": None if self.energy_j is None else round(self.energy_j, 4),
            "energy_provenance": self.energy_provenance,
            "prefill_ms": round(g.prefill_ms, 3),
            "decode_ms": round(g.decode_ms, 3),
            "decode_tokens_per_s": round(g.decode_tokens_per_s, 2),
            "decode_step_ms": [round(x, 3) for x in g.decode_step_ms],
            "plan": self.plan,
        }



def _default_factory(bundle: Bundle, variant: Variant, n_ctx: int, n_threads: int) -> Runner:
    return open_runner(bundle, variant, n_ctx=n_ctx, n_threads=n_threads)


class Runtime:
    """Answers prompts from a bundle; thread-safe ``cancel()``; one request at a time.

    profile: a DeviceProfile (or its path) for ``strategy="auto"``; trace_path: JSONL file
    that receives one decision record per request; sensor: a devices Sensor to measure
    energy with (otherwise energy is estimated from the profile and labelled so);
    power_knob: a device-wide power setting moved to honour each request's power_w
    (edgert.power: Jetson power modes, NVIDIA power limit); on CPUs the planner's thread
    count is the knob; runner_factory: builds runners (tests use it to slow one down).
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
        power_knob: Any = None,
    ):
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(Path(bundle))
        self.default_variant = self.bundle.variant(variant).name
        self.n_ctx = n_ctx
        self.n_threads = n_threads or default_threads()
        if profile is not None and not hasattr(profile, "variants"):
            from .profiler.profile import DeviceProfile

            profile = DeviceProfile.load(Path(profile))
        self.profile = profile
        self.trace_path = Path(trace_path) if trace_path is not None else None
        self.sensor = sensor
        self.target = target
        self._factory = runner_factory or _default_factory
        self.power_knob = power_knob
        self._runners: Dict[str, Runner] = {}
        self._load_ms: Dict[str, float] = {}
        self._last: Optional[str] = None
        #: observed / predicted latency per "variant@threads" (1.0: as profiled), updated after
        #: each request; thread counts matter separately because on a busy CPU using every core
        #: suffers far more than using fewer
        self.corrections: Dict[str, float] = {}
        #: per variant, recent log(observed / corrected prediction): the error the planner's
        #: latency bound must cover (see sigma())
        self.residuals: Dict[str, Deque[float]] = {}
        self._lock = threading.Lock()
        self._cancel: Optional[CancelToken] = None
        self._requests = 0
        self.last_plan = None  # the planner's full answer for the last "auto" request
        self._task_sets: Dict[str, Any] = {}
        self._memory_estimates: Dict[tuple, Any] = {}

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
    def load(self, variant: Optional[str] = None) -> float:
        """Verify and load a variant (the default one if None); return the load time in ms
        (0 when it was already loaded). Loaded variants stay loaded."""
        chosen = self.bundle.variant(variant or self.default_variant)
        self._last = chosen.name
        if chosen.name in self._runners:
            return 0.0
        start = time.perf_counter()
        n_ctx = min(self.n_ctx, chosen.context_length or self.n_ctx)
        self._check_memory(chosen, n_ctx)
        runner = self._factory(self.bundle, chosen, n_ctx, self.n_threads)
        runner.load()
        self._runners[chosen.name] = runner
        self._load_ms[chosen.name] = (time.perf_counter() - start) * 1000
        return self._load_ms[chosen.name]

    def loaded(self) -> List[str]:
        """Names of the variants in memory."""
        return sorted(self._runners)

    def preload(self, variants: Optional[Sequence[str]] = None) -> Dict[str, float]:
        """Load several variants ahead of requests (all calibrated ones by default)."""
        names = list(variants) if variants else sorted({str(r["variant"]) for r in self.bundle.manifest.accuracy_table}
                                                      or {self.default_variant})
        return {name: self.load(name) for name in names}

    def _check_memory(self, variant: Variant, n_ctx: int) -> None:
        try:
            from .memory import check_fits, estimate_memory
        except ImportError:
            return
        if variant.format == "gguf":
            key = (variant.name, n_ctx)
            if key not in self._memory_estimates:  # the header is read once; available memory is read each time
                # unified KV cache: n_ctx cells shared by all sequences
                self._memory_estimates[key] = estimate_memory(self.bundle.path_of(variant), n_ctx=n_ctx)
            check_fits(self._memory_estimates[key])

    def _memory_exclusions(self) -> Dict[str, str]:
        """Variants the planner must leave out because loading them would not fit."""
        excluded: Dict[str, str] = {}
        for variant in self.bundle.variants:
            if variant.name in self._runners:
                continue
            try:
                self._check_memory(variant, min(self.n_ctx, variant.context_length or self.n_ctx))
            except Exception as exc:  # InsufficientMemoryError: the message names the numbers
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
                if request.strategy is None:
                    return self._plain(request, deadline, on_token, cancel)
                return self._planned(request, deadline, cancel)
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

    def _plain(self, request: Request, deadline: Deadline, on_token, cancel: CancelToken) -> RuntimeResult:
        name = self.variant(request.variant).name
        load_ms = self._load_within(name, deadline)
        runner = self._runners[name]
        if runner.n_threads != self.n_threads:
            runner.set_threads(self.n_threads)
        runner.step_log.clear()
        result = runner.generate(request.prompt, request.sampling, deadline=deadline, on_token=on_token, cancel=cancel,
                                 chat=request.chat, system=request.system)
        latency_ms = deadline.elapsed_s() * 1000
        self._observe(name, runner)
        out = RuntimeResult(text=result.text, variant=name, finish_reason=result.finish_reason, latency_ms=latency_ms,
                            load_ms=load_ms, generation=result, deadline_s=deadline.seconds, samples=[result],
                            threads=runner.n_threads)
        out.energy_j, out.energy_provenance = self._estimate_energy(name, runner.n_threads, latency_ms - load_ms)
        self._trace(out, None)
        return out

    def _planned(self, request: Request, deadline: Deadline, cancel: CancelToken) -> RuntimeResult:
        plan_dict = None
        prepared: Dict[str, tuple] = {}
        if request.planned:
            config, plan_dict, prepared = self._plan(request, deadline)
        else:
            multi = request.strategy in ("sc", "esc", "bon")
            config = Config(self.variant(request.variant).name, request.strategy, request.max_tokens,
                            n=(request.n or 5) if multi else 1,
                            think_tokens=(request.think_tokens or 2 * request.max_tokens) if request.strategy == "bf" else 0)
        setting, warnings = self._apply_power(request.power_w)
        load_ms = self._load_within(config.variant, deadline)
        runner = self._runners[config.variant]
        threads = config.threads or self.n_threads
        if runner.n_threads != threads:
            runner.set_threads(threads)
        ids, spec = prepared.get(config.variant) or self._prepare(runner, request)
        runner.step_log.clear()
        meter = self._meter()
        outcome = get_strategy(config.strategy).run(runner, ids, config, spec, deadline, cancel, seed=request.seed,
                                                    reserve_s=self._reserve_fn(config, len(ids)))
        latency_ms = deadline.elapsed_s() * 1000
        measured = meter.stop() if meter is not None else None
        self._observe(config.variant, runner)
        main = outcome.samples[-1] if outcome.samples else runner.empty_result(ids, "deadline", deadline)
        out = RuntimeResult(
            text=outcome.text, variant=config.variant, finish_reason=outcome.finish_reason, latency_ms=latency_ms,
            load_ms=load_ms, generation=main, deadline_s=deadline.seconds, answer=outcome.answer,
            config=config.to_dict(), plan=plan_dict, samples=outcome.samples, votes=outcome.votes,
            forced=outcome.forced, threads=threads, power_setting=setting, warnings=warnings,
        )
        if plan_dict is not None and not plan_dict["feasible"]:
            out.warnings.append(plan_dict["reason"])
        if measured is not None:
            out.energy_j, out.energy_provenance = measured.energy_j, measured.provenance
        else:
            out.energy_j, out.energy_provenance = self._estimate_energy(config.variant, threads, latency_ms - load_ms)
        self._trace(out, plan_dict)
        return out

    # ----------------------------------------------------------------- planning
    def _prepare(self, runner: Runner, request: Request):
        """Token ids and answer spec of a request. With a task set, the question is asked the
        way calibration asked it (chat models: with the answer instruction; base models:
        few-shot), so the accuracy the planner expects is the one measured."""
        from .strategies import AnswerSpec, ThinkingFormat

        if request.task_set is None:
            ids = runner.encode(request.prompt, chat=request.chat, system=request.system)
            return ids, AnswerSpec(kind=request.answer_type, choices=request.choices, pattern=request.pattern,
                                   stop=request.stop, thinking=ThinkingFormat.for_template(runner.chat_template_source))
        from .calibrate import prepare_task
        from .tasks import Task

        tasks = self._task_set(request.task_set)
        kind = request.answer_type or (tasks.tasks[0].type if tasks.tasks else "text")
        task = Task(id="request", prompt=request.prompt, answer="", type=kind, choices=request.choices,
                    pattern=request.pattern)
        return prepare_task(runner, task, tasks.shots(), request.stop)

    def _task_set(self, name: str):
        from .tasks import load_tasks

        if name not in self._task_sets:
            self._task_sets[name] = load_tasks(name)
        return self._task_sets[name]

    def _plan(self, request: Request, deadline: Deadline):
        from .planner import Limits, plan

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
                        target=self.target,
                        prompt_tokens=fallback)
        result = plan(self.bundle.manifest.accuracy_table, self.profile, limits, task_set=request.task_set,
                      corrections=self.planner_corrections(), extra_ms=extra_ms, excluded=excluded, prompt_tokens=lengths,
                      sigma=self.sigmas())
        self.last_plan = result
        choice = result.choice
        return choice.config, {
            "feasible": result.feasible, "reason": result.reason, "planning_ms": round(result.planning_ms, 3),
            "predicted_latency_ms": round(choice.latency_ms, 1), "latency_bound_ms": round(choice.latency_bound_ms, 1),
            "predicted_power_w": round(choice.power_w, 2), "expected_accuracy": round(choice.accuracy, 4),
            "prompt_tokens": lengths.get(choice.config.variant, fallback), "estimated": choice.estimated,
        }, prepared

    def planner_corrections(self) -> Dict[str, float]:
        """Corrections per variant@threads, plus per variant the largest one observed (used for
        thread counts not tried yet: assume the slowdown applies to them too)."""
        out = dict(self.corrections)
        for key, value in self.corrections.items():
            variant = key.rsplit("@", 1)[0]
            out[variant] = max(out.get(variant, 0.0), value)
        return out

    def sigma(self, variant: str) -> float:
        """Relative standard deviation of this runtime's latency predictions for a variant.

        Starts as the profile's (from its held-out error) and moves to the spread seen here.
        The residuals are log(observed / corrected prediction) of the last SIGMA_WINDOW
        requests. From SIGMA_MIN_OBSERVATIONS of them on, their spread is the median absolute
        residual x 1.4826 (the standard deviation of a normal error with that median), pooled
        with the profile's figure weighted as SIGMA_PRIOR_WEIGHT requests. The median keeps
        the few residuals right after a step change in speed, which the correction absorbs
        within a few requests, from widening the margin for a whole window. A steady device
        narrows the planner's safety margin; an erratic one (a busy CPU, throttling) widens it."""
        from statistics import median

        from .planner import SIGMA_FLOOR, profile_sigma

        prior = profile_sigma(self.profile, variant)
        seen = self.residuals.get(variant) or ()
        if len(seen) < SIGMA_MIN_OBSERVATIONS:
            return prior
        observed = 1.4826 * median(abs(r) for r in seen)
        pooled = (SIGMA_PRIOR_WEIGHT * prior**2 + len(seen) * observed**2) / (SIGMA_PRIOR_WEIGHT + len(seen))
        return max(SIGMA_FLOOR, math.sqrt(pooled))

    def sigmas(self) -> Dict[str, float]:
        if self.profile is None:
            return {}
        return {name: self.sigma(name) for name in self.profile.variants}

    def reset_learning(self) -> None:
        """Forget the online corrections and latency spread (back to the profile's models)."""
        self.corrections.clear()
        self.residuals.clear()

    def _correction(self, variant: str, threads: Optional[int]) -> float:
        return self.corrections.get(f"{variant}@{threads}", self.planner_corrections().get(variant, 1.0))

    def _thread_scale(self, variant: str, threads: Optional[int]) -> float:
        from .planner import at_threads

        return at_threads(self.profile, variant, threads)[0]

    def _reserve_fn(self, config, prompt_tokens: int):
        """Time the answer phase of budget forcing needs, from the profile (None: observed)."""
        if self.profile is None or config.variant not in self.profile.variants:
            return None
        from statistics import NormalDist

        from .strategies import FORCED_CLOSE_TOKENS

        z = NormalDist().inv_cdf(self.target)
        threads = config.threads or self.n_threads
        factor = (self._correction(config.variant, threads) * self._thread_scale(config.variant, threads)
                  * (1 + z * self.sigma(config.variant)))
        context = prompt_tokens + config.think_tokens

        def reserve_s(answer_tokens: int) -> float:
            ms = (self.profile.predict_prefill_ms(config.variant, FORCED_CLOSE_TOKENS)
                  + answer_tokens * self.profile.predict_decode_step_ms(config.variant, context + answer_tokens / 2))
            return ms * factor / 1000

        return reserve_s

    def _observe(self, variant: str, runner: Runner) -> None:
        """Online recalibration: compare this request's prefill and decode times with the
        profile's predictions and move the variant's correction factor toward the ratio."""
        if self.profile is None or variant not in self.profile.variants or not runner.step_log:
            return
        observed = predicted = 0.0
        for record in runner.step_log:
            if record.kind.startswith("prefill"):
                if record.size < 1:
                    continue
                expected = self.profile.predict_prefill_ms(variant, record.size)
                if record.kind == "prefill-cut" and record.ms < expected:
                    continue  # a cut prefill only bounds the time from below: it can show a slowdown, not a speed-up
                predicted += expected
            else:
                predicted += self.profile.predict_decode_step_ms(variant, record.context, record.size)
            observed += record.ms
        if predicted <= 0 or observed <= 0:
            return
        ratio = observed / (predicted * self._thread_scale(variant, runner.n_threads))
        ratio = min(max(ratio, CORRECTION_RANGE[0]), CORRECTION_RANGE[1])
        key = f"{variant}@{runner.n_threads}"
        old = self._correction(variant, runner.n_threads)
        if key in self.corrections:  # the first request only measures the profile's bias, not the spread
            self.residuals.setdefault(variant, deque(maxlen=SIGMA_WINDOW)).append(math.log(ratio / old))
        self.corrections[key] = math.exp((1 - CORRECTION_ALPHA) * math.log(old) + CORRECTION_ALPHA * math.log(ratio))

    def _apply_power(self, power_w: Optional[float]):
        """Move the device's power knob for this request's limit; a knob that cannot act is
        reported in the result's warnings, never a failed request."""
        if self.power_knob is None:
            return None, []
        from .errors import DeviceError

        try:
            return self.power_knob.apply_limit(power_w).label, []
        except DeviceError as exc:
            return None, [str(exc)]

    # ------------------------------------------------------------------- energy
    def _meter(self):
        if self.sensor is None or getattr(self.sensor, "provenance", "") != "measured":
            return None
        from .devices.base import EnergyMeter

        meter = EnergyMeter(self.sensor)
        meter.start()
        return meter

    def _estimate_energy(self, variant: str, threads: Optional[int], busy_ms: float):
        """Profile's average power (scaled for fewer threads) x time: an estimate, labelled so."""
        if self.profile is None or variant not in self.profile.variants:
            return None, "unknown"
        from .planner import at_threads

        power = at_threads(self.profile, variant, threads)[1]
        return power * max(busy_ms, 0.0) / 1000, "estimated"

    # -------------------------------------------------------------------- trace
    def _trace(self, result: RuntimeResult, plan: Optional[Dict[str, Any]]) -> None:
        self._requests += 1
        if self.trace_path is None:
            return
        record = {
            "time": time.time(), "request": self._requests, "variant": result.variant, "config": result.config,
            "plan": plan, "answer": result.answer, "finish_reason": result.finish_reason,
            "deadline_s": result.deadline_s, "deadline_met": result.deadline_met,
            "latency_ms": round(result.latency_ms, 2), "load_ms": round(result.load_ms, 2),
            "tokens_in": result.generation.tokens_in, "tokens_out": result.tokens_out,
            "samples": len(result.samples), "threads": result.threads,
            "energy_j": None if result.energy_j is None else round(result.energy_j, 4),
            "energy_provenance": result.energy_provenance,
            "corrections": {k: round(v, 4) for k, v in self.corrections.items()},
            "sigma": {k: round(v, 4) for k, v in self.sigmas().items()},
        }
        self.trace_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.trace_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
