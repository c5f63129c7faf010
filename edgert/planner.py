"""The planner: the configuration with the highest expected accuracy that meets the limits.

A pure function of the bundle's accuracy table, the device profile and the request's
limits; it never touches a device, so it is tested as a function. For every configuration
(variant x strategy x N x budgets x thread count) it prices the strategy's schedule with
the profile's fitted latency model:

- latency: prefill, then decode steps at the batch size the strategy uses, with context
  growing as tokens are produced. Decode phases count the 95th percentile of the steps the
  configuration used in calibration (answers often end long before their budget), or the
  full budgets when the table has no such figure; a longer request is still cut at its
  deadline by the runtime. The result is multiplied by the runtime's observed/predicted ratio for
  the variant (online recalibration) and by cores/threads for fewer threads than were
  profiled (an estimate, labelled so);
- P(latency <= deadline) >= target: the predicted latency is raised by z(target) x sigma,
  sigma being the relative error of the profile's held-out predictions (MAPE x sqrt(pi/2),
  the standard deviation of a normal error with that mean absolute value), at least 5%.
  The runtime passes its own sigma once it has seen requests on the device (the spread of
  observed over corrected-predicted latency; see Runtime.sigma), which replaces the profile's;
- power: the profile's average power at the profiled thread count, scaled for fewer threads
  with the same load curve the power estimate uses (0.1 + 0.9 load^3);
- energy: power x predicted latency.

A looser deadline only adds feasible configurations, so the chosen accuracy never drops.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from statistics import NormalDist
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from .errors import UsageError
from .stats import wilson_interval
from .profiler.online import SIGMA_FLOOR, at_threads, profile_sigma, thread_options
from .policies import Cascade
from .strategies import Config, strategy

DEFAULT_TARGET = 0.95
#: calibration tasks a policy must win by before it is chosen over a plain configuration
#: (bench/results/README.md, issue 13: at 4 and 10 s a cascade better by 1 task of 80 was
#: chosen over budget forcing alone, and did a point worse at 1.3-1.4x its latency)
POLICY_PENALTY_TASKS = 1


@dataclass(frozen=True)
class Limits:
    """What a request allows."""

    deadline_s: float
    power_w: Optional[float] = None
    energy_j: Optional[float] = None
    target: float = DEFAULT_TARGET
    prompt_tokens: int = 64

    def __post_init__(self) -> None:
        if not (isinstance(self.deadline_s, (int, float)) and math.isfinite(self.deadline_s) and self.deadline_s > 0):
            raise UsageError(f"deadline must be a positive number of seconds, found {self.deadline_s!r}")
        if self.power_w is not None and not self.power_w > 0:
            raise UsageError(f"power limit must be a positive number of watts, found {self.power_w!r}")
        if self.energy_j is not None and not self.energy_j > 0:
            raise UsageError(f"energy budget must be a positive number of joules, found {self.energy_j!r}")
        if not 0.5 <= self.target < 1:
            raise UsageError(f"target probability must be within [0.5, 1), found {self.target!r}")
        if self.prompt_tokens < 1:
            raise UsageError(f"prompt length must be at least 1 token, found {self.prompt_tokens!r}")


@dataclass
class Candidate:
    """A configuration with its expected accuracy and predicted cost."""

    config: Config
    accuracy: float
    ci_low: float
    ci_high: float
    tasks: int
    latency_ms: float  # predicted, budgets used up
    latency_bound_ms: float  # at the target probability
    power_w: float
    energy_j: float
    estimated: bool  # a figure comes from a datasheet prior or a thread-count scaling
    problems: List[str] = field(default_factory=list)
    #: a per-prompt policy whose first stage is ``config`` (None: the configuration alone)
    policy: Optional[Cascade] = None
    escalated_share: float = 0.0  # of the calibration prompts, cross-validated
    then_latency_ms: float = 0.0  # the escalation stage alone, predicted (the runtime's go/no-go)
    then_bound_ms: float = 0.0  # ... and at the target probability

    @property
    def feasible(self) -> bool:
        return not self.problems

    @property
    def label(self) -> str:
        return self.policy.label if self.policy is not None else self.config.label

    @property
    def ranked_accuracy(self) -> float:
        """The accuracy the choice compares: a policy's is lowered by POLICY_PENALTY_TASKS of
        its calibration tasks, as its signal and threshold were selected on those tasks too
        (even cross-validated, the best of many policies is an optimistic pick), so a policy
        must beat a plain configuration by more than that to be chosen over it."""
        if self.policy is None or self.tasks <= 0:
            return self.accuracy
        return self.accuracy - POLICY_PENALTY_TASKS / self.tasks

    def to_dict(self) -> Dict[str, object]:
        extra: Dict[str, object] = {}
        if self.policy is not None:
            extra = {"policy": {**self.policy.to_dict(), "then_config": self.policy.then.to_dict()},
                     "escalated_share": self.escalated_share, "then_latency_ms": round(self.then_latency_ms, 2),
                     "then_bound_ms": round(self.then_bound_ms, 2)}
        return {
            **self.config.to_dict(), **extra, "label": self.label, "accuracy": round(self.accuracy, 4),
            "ci_low": self.ci_low, "ci_high": self.ci_high, "tasks": self.tasks,
            "latency_ms": round(self.latency_ms, 2), "latency_bound_ms": round(self.latency_bound_ms, 2),
            "power_w": round(self.power_w, 2), "energy_j": round(self.energy_j, 3), "estimated": self.estimated,
            "feasible": self.feasible, "problems": self.problems,
        }


@dataclass
class Plan:
    choice: Candidate
    feasible: bool
    reason: str
    candidates: List[Candidate]
    frontier: List[Candidate]
    limits: Limits
    sigma: Dict[str, float]
    planning_ms: float = 0.0

    @property
    def warnings(self) -> List[str]:
        return [] if self.feasible else [self.reason]

    def to_dict(self, all_candidates: bool = False) -> Dict[str, object]:
        out: Dict[str, object] = {
            "choice": self.choice.to_dict(), "feasible": self.feasible, "reason": self.reason,
            "limits": vars(self.limits), "sigma": self.sigma, "planning_ms": round(self.planning_ms, 3),
            "frontier": [c.to_dict() for c in self.frontier],
        }
        if all_candidates:
            out["candidates"] = [c.to_dict() for c in self.candidates]
        return out


@dataclass(frozen=True)
class AccuracyEntry:
    config: Config
    accuracy: float
    ci_low: float
    ci_high: float
    tasks: int
    steps_share: float = 1.0  # 95th percentile of decode steps used / worst case (calibration)


def accuracy_entries(rows: Iterable[Mapping[str, object]], task_set: Optional[str] = None) -> List[AccuracyEntry]:
    """Accuracy per configuration for one task set, or pooled over all task sets."""
    pooled: Dict[str, List] = {}
    for row in rows:
        if task_set is not None and row.get("task_set") != task_set:
            continue
        config = Config.from_dict(dict(row))
        entry = pooled.setdefault(config.key, [config, 0, 0, 0.0])
        entry[1] += int(row["correct"])
        entry[2] += int(row["total"])
        entry[3] = max(entry[3], float(row.get("steps_share_p95", 1.0)))  # pooled: the most demanding set
    out = []
    for config, correct, total, share in pooled.values():
        low, high = wilson_interval(correct, total)
        out.append(AccuracyEntry(config, correct / total if total else 0.0, round(low, 4), round(high, 4), total,
                                 min(1.0, max(share, 0.05))))
    return out


def policy_entries(rows: Iterable[Mapping[str, object]], task_set: Optional[str] = None) -> List[Dict[str, object]]:
    """Policy rows for one task set (or pooled over all: counts and escalations summed per policy)."""
    pooled: Dict[str, List] = {}
    for row in rows:
        if task_set is not None and row.get("task_set") != task_set:
            continue
        entry = pooled.setdefault(str(row["key"]), [Cascade.from_dict(row), 0, 0, 0.0])
        total = int(row["total"])
        entry[1] += int(row["correct"])
        entry[2] += total
        entry[3] += float(row["escalated_share"]) * total
    out = []
    for policy, correct, total, escalated in pooled.values():
        if total <= 0:
            continue
        low, high = wilson_interval(correct, total)
        out.append({"policy": policy, "accuracy": correct / total, "ci_low": round(low, 4), "ci_high": round(high, 4),
                    "total": total, "escalated_share": round(escalated / total, 4)})
    return out


def predict_latency_ms(profile, config: Config, prompt_tokens: int, steps_share: float = 1.0,
                       cached_tokens: int = 0) -> float:
    """Latency of ``config`` at the profiled thread count, from the fitted models, with each
    decode phase using ``steps_share`` of its budget (1.0: the worst case). cached_tokens:
    prompt tokens already in the runner's cache (a cascade's second stage on the same
    model), which the first prompt evaluation skips."""
    total = 0.0
    context = prompt_tokens
    for i, phase in enumerate(strategy(config.strategy).schedule(config, prompt_tokens)):
        if phase.kind == "prefill":
            evaluated = max(1, phase.tokens - cached_tokens) if i == 0 else phase.tokens
            total += profile.predict_prefill_ms(config.variant, evaluated)
            context = max(context, phase.tokens)
        else:
            steps = phase.tokens * steps_share
            total += steps * profile.predict_decode_step_ms(config.variant, context + steps / 2, phase.batch)
            context += steps
    return total


def plan(
    rows: Iterable[Mapping[str, object]],
    profile,
    limits: Limits,
    *,
    task_set: Optional[str] = None,
    corrections: Optional[Mapping[str, float]] = None,
    extra_ms: Optional[Mapping[str, float]] = None,
    excluded: Optional[Mapping[str, str]] = None,
    threads: Optional[Mapping[str, Sequence[Optional[int]]]] = None,
    prompt_tokens: Optional[Mapping[str, int]] = None,
    sigma: Optional[Mapping[str, float]] = None,
    policies: Iterable[Mapping[str, object]] = (),
) -> Plan:
    """Choose a configuration for one request.

    rows: the bundle's accuracy table; profile: a DeviceProfile; corrections: observed over
    predicted latency per "variant@threads" or per variant (online recalibration, 1.0 = as
    profiled); extra_ms: time
    to add per variant (loading one that is not in memory); excluded: variants left out with
    the reason (too large for memory); threads: thread counts to consider per variant;
    prompt_tokens: the prompt's length per variant where it differs from limits.prompt_tokens
    (tokenizers and prompt formats differ between models); sigma: relative latency error per
    variant where it is known better than from the profile (the runtime's observations);
    policies: the bundle's policy table (``edgert.policies``), whose cascades compete with
    the configurations.
    """
    started = time.perf_counter()
    entries = [e for e in accuracy_entries(rows, task_set) if e.config.variant in profile.variants]
    if not entries:
        known = sorted({str(r.get("variant")) for r in rows})
        raise UsageError(
            "no configuration has both an accuracy (edgert calibrate) and a latency model (edgert profile)"
            + (f" for task set {task_set!r}" if task_set else "")
            + f"; calibrated variants: {', '.join(known) or 'none'}; profiled: {', '.join(profile.variants) or 'none'}"
        )
    corrections = corrections or {}
    extra_ms = extra_ms or {}
    excluded = excluded or {}
    variants = sorted({e.config.variant for e in entries})
    threads = threads or thread_options(profile, variants)
    z = NormalDist().inv_cdf(limits.target)
    sigma = {v: max(SIGMA_FLOOR, (sigma or {}).get(v) or profile_sigma(profile, v)) for v in variants}
    prior = profile.kind == "prior"
    base_cache: Dict[tuple, float] = {}
    candidates: List[Candidate] = []
    priced: Dict[tuple, Candidate] = {}  # (config key, threads) -> its candidate, for the policies
    scaling: Dict[tuple, tuple] = {}  # (variant, threads) -> at_threads(...)
    by_key = {e.config.key: e for e in entries}

    def price(entry: AccuracyEntry, t: Optional[int], cached: bool = False) -> Tuple[float, float, bool]:
        """Predicted latency (ms, corrected, with loading), power and whether estimated."""
        name = entry.config.variant
        key = (entry.config.key, cached)
        if key not in base_cache:
            length = (prompt_tokens or {}).get(name, limits.prompt_tokens)
            base_cache[key] = predict_latency_ms(profile, entry.config, length, entry.steps_share,
                                                 cached_tokens=length if cached else 0)
        if (name, t) not in scaling:
            scaling[(name, t)] = at_threads(profile, name, t)
        scale, power, scaled = scaling[(name, t)]
        correction = corrections.get(f"{name}@{t}", corrections.get(name, 1.0))
        latency = base_cache[key] * scale * correction + (0.0 if cached else extra_ms.get(name, 0.0))
        estimated = scaled or prior or profile.variant(name).energy.get("provenance") != "measured"
        return latency, power, estimated

    def problems_of(names: Sequence[str], bound: float, power: float, energy: float) -> List[str]:
        problems = [excluded[n] for n in dict.fromkeys(names) if n in excluded]
        if bound > limits.deadline_s * 1000:
            problems.append(f"needs {bound:.0f} ms at p{limits.target * 100:.0f}, deadline {limits.deadline_s * 1000:.0f} ms")
        if limits.power_w is not None and power > limits.power_w:
            problems.append(f"draws {power:.1f} W, limit {limits.power_w:g} W")
        if limits.energy_j is not None and energy > limits.energy_j:
            problems.append(f"uses {energy:.2f} J, budget {limits.energy_j:g} J")
        return problems

    for entry in entries:
        name = entry.config.variant
        for t in threads.get(name, [None]):
            latency, power, estimated = price(entry, t)
            config = replace(entry.config, threads=t)
            bound = latency * (1 + z * sigma[name])
            energy = power * latency / 1000
            candidate = Candidate(config, entry.accuracy, entry.ci_low, entry.ci_high, entry.tasks, latency, bound,
                                  power, energy, estimated, problems_of([name], bound, power, energy))
            candidates.append(candidate)
            priced[(entry.config.key, t)] = candidate

    for row in policy_entries(policies, task_set):
        policy = row["policy"]
        first, then = by_key.get(policy.first.key), by_key.get(policy.then.key)
        if first is None or then is None:
            continue
        shared = [t for t in threads.get(first.config.variant, [None]) if t in threads.get(then.config.variant, [None])]
        for t in shared:
            lat1, power1, est1 = price(first, t)
            lat2, power2, est2 = price(then, t, cached=first.config.variant == then.config.variant)
            share = float(row["escalated_share"])
            bound = (lat1 + lat2) * (1 + z * max(sigma[first.config.variant], sigma[then.config.variant]))
            power = max(power1, power2)
            energy = (power1 * lat1 + share * power2 * lat2) / 1000
            candidates.append(Candidate(
                priced[(first.config.key, t)].config, row["accuracy"], row["ci_low"], row["ci_high"], row["total"],
                lat1 + share * lat2, bound, power, energy, est1 or est2,
                problems_of([first.config.variant, then.config.variant], bound, power, energy),
                policy=policy, escalated_share=share, then_latency_ms=lat2,
                then_bound_ms=lat2 * (1 + z * sigma[then.config.variant])))

    feasible = [c for c in candidates if c.feasible]
    if feasible:
        # equally accurate: the lower expected latency (a cascade that rarely escalates beats
        # its second stage alone), then energy
        choice = max(feasible, key=lambda c: (c.ranked_accuracy, -c.latency_ms, -c.energy_j))
        reason = f"highest expected accuracy of {len(feasible)} feasible configurations"
    else:
        choice, reason = _fallback(candidates, limits, excluded)
    if choice.policy is not None:  # both stages run at the chosen thread count
        choice.policy = choice.policy.with_threads(choice.config.threads)
    frontier = pareto_frontier([c for c in candidates if not _fails_other_than_deadline(c)])
    return Plan(choice, bool(feasible), reason, candidates, frontier, limits, sigma,
                (time.perf_counter() - started) * 1000)


def _fails_other_than_deadline(c: Candidate) -> bool:
    return any(not p.startswith("needs ") for p in c.problems)


def _fallback(candidates: List[Candidate], limits: Limits, excluded: Mapping[str, str]):
    """Nothing fits: the fastest configuration (within the power limit if any can be), and why."""
    usable = [c for c in candidates if c.config.variant not in excluded] or candidates
    within_power = [c for c in usable if limits.power_w is None or c.power_w <= limits.power_w]
    pool = within_power or usable
    fastest = min(pool, key=lambda c: (c.latency_bound_ms, -c.accuracy))
    why = []
    if excluded and len(usable) < len(candidates):
        why.append("; ".join(f"{v}: {r}" for v, r in excluded.items()))
    if not within_power:
        lowest = min(usable, key=lambda c: c.power_w)
        why.append(f"the lowest-power configuration draws {lowest.power_w:.1f} W, above the {limits.power_w:g} W limit")
    if fastest.latency_bound_ms > limits.deadline_s * 1000:
        why.append(f"the fastest configuration needs {fastest.latency_bound_ms:.0f} ms at p{limits.target * 100:.0f}, "
                   f"above the {limits.deadline_s * 1000:.0f} ms deadline")
    if limits.energy_j is not None and fastest.energy_j > limits.energy_j:
        why.append(f"it uses {fastest.energy_j:.2f} J, above the {limits.energy_j:g} J budget")
    return fastest, "nothing fits: " + "; ".join(why or ["no configuration meets every limit"]) + \
        "; falling back to the fastest configuration (the runtime still answers by the deadline)"


def pareto_frontier(candidates: Sequence[Candidate]) -> List[Candidate]:
    """Configurations no other one beats on both latency (bound) and accuracy, fastest first."""
    frontier: List[Candidate] = []
    best = -1.0
    for c in sorted(candidates, key=lambda c: (c.latency_bound_ms, -c.accuracy)):
        if c.accuracy > best:
            frontier.append(c)
            best = c.accuracy
    return frontier
