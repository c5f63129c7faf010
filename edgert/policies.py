"""Per-prompt policies, fitted on calibration's per-task records and scored by replaying them.

A **cascade** answers with a cheap configuration first (``first``) and reads the answer's
confidence (``strategies.confidence``). When the chosen signal clears the threshold the
answer stands; otherwise the request escalates to ``then`` (a bigger model, a thinking
budget, more samples) if the time left allows, and ``then``'s answer replaces the first
one (unless ``then`` produced none, e.g. cut by the deadline). The signal ``always``
escalates every prompt: the **anytime** policy, which holds the first answer and refines
it while the deadline allows.

Fitting (``fit_policies``) is offline and runs when calibration finishes. For every pair of
a greedy ``first`` and any other ``then`` configuration, and every signal, the threshold is
the one that maximizes replayed accuracy on the records (ties: the one escalating fewer
prompts), placed midway between neighbouring signal values. The accuracy the planner sees
is a cross-validated one (``FOLDS``-fold: thresholds fitted on the other folds, applied to
each held-out fold), so choosing a threshold on the same tasks does not inflate it. Only
policies that beat their ``first`` configuration by more than chance are kept (a sign test
on the tasks where the two answer differently, ``beats``), the best signal per pair.

The planner prices a policy with the profile like any configuration: mean latency is
first + escalated share x then; the deadline bound counts both stages in full, so an
escalation that the plan relies on fits by construction.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from statistics import NormalDist
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .errors import UsageError
from .stats import wilson_interval
from .strategies import SIGNALS, Config, confident

#: the pseudo-signal of the anytime policy (escalate every prompt)
ALWAYS = "always"
FOLDS = 5
#: fewer calibrated tasks than this and no policy is fitted (a threshold would be noise)
MIN_TASKS = 10
#: most policies kept per task set (by cross-validated accuracy), so planning stays fast
MAX_POLICIES = 48
#: a policy is kept only if it beats its first configuration in a one-sided sign test at this
#: family-wise error rate, Bonferroni-corrected for the number of pairs tried; see ``beats``
FAMILY_ALPHA = 0.05


@dataclass(frozen=True)
class Cascade:
    """Answer with ``first``; escalate to ``then`` when ``signal`` is below ``threshold``."""

    first: Config
    then: Config
    signal: str
    threshold: float = 0.0

    def __post_init__(self) -> None:
        if self.signal != ALWAYS and self.signal not in SIGNALS:
            raise UsageError(f"a cascade's signal must be one of {', '.join(SIGNALS + (ALWAYS,))}; found {self.signal!r}")
        if not math.isfinite(self.threshold):
            raise UsageError(f"a cascade's threshold must be a finite number; found {self.threshold!r}")
        if self.first.key == self.then.key:
            raise UsageError(f"a cascade escalates to another configuration; found {self.first.key} twice")

    @property
    def kind(self) -> str:
        return "anytime" if self.signal == ALWAYS else "cascade"

    @property
    def key(self) -> str:
        rule = ALWAYS if self.signal == ALWAYS else f"{self.signal}<{self.threshold:g}"
        return f"{self.kind}:{self.first.key}>{self.then.key}@{rule}"

    @property
    def label(self) -> str:
        rule = "always" if self.signal == ALWAYS else f"if {self.signal} < {self.threshold:g}"
        return f"{self.first.label}, then {self.then.label} ({rule})"

    def escalates(self, signals: Mapping[str, Optional[float]]) -> bool:
        """Whether an answer with these confidence signals is escalated."""
        return self.signal == ALWAYS or not confident(signals.get(self.signal), self.threshold)

    def with_threads(self, threads: Optional[int]) -> "Cascade":
        return Cascade(_threads(self.first, threads), _threads(self.then, threads), self.signal, self.threshold)

    def to_dict(self) -> Dict[str, object]:
        return {"policy": self.kind, "first": self.first.key, "then": self.then.key, "signal": self.signal,
                "threshold": self.threshold}

    @classmethod
    def from_dict(cls, row: Mapping[str, object]) -> "Cascade":
        try:
            return _parsed(str(row["first"]), str(row["then"]), str(row["signal"]), float(row.get("threshold", 0.0)))  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"a policy row needs first, then, signal and threshold; found {dict(row)!r} ({exc})") from None


@functools.lru_cache(maxsize=4096)
def _parsed(first: str, then: str, signal: str, threshold: float) -> Cascade:
    """A policy row's cascade (the planner reads the same rows on every request)."""
    return Cascade(Config.from_key(first), Config.from_key(then), signal, threshold)


def _threads(config: Config, threads: Optional[int]) -> Config:
    return replace(config, threads=threads)


# ---------------------------------------------------------------------------- replay
Outcomes = Dict[str, Dict[str, Mapping[str, object]]]  # task -> config key -> record result


def outcomes(records: Iterable[Mapping[str, object]]) -> Outcomes:
    """Per-task results by configuration key, from calibration records (one per variant x task)."""
    table: Outcomes = {}
    for record in records:
        table.setdefault(str(record["task"]), {}).update(record["results"])  # type: ignore[arg-type]
    return table


def replay(policy: Cascade, table: Outcomes) -> Dict[str, object]:
    """A policy's outcome on every task that has both its configurations: correct count,
    total, escalated count, and the decode steps of each stage (escalated tasks pay both)."""
    correct = escalated = total = 0
    steps: List[int] = []
    for results in table.values():
        first, then = results.get(policy.first.key), results.get(policy.then.key)
        if first is None or then is None:
            continue
        total += 1
        if policy.escalates(first.get("signals") or {}):
            escalated += 1
            ok = then["correct"] if then.get("answer") is not None else first["correct"]
            steps.append(int(first.get("steps", 0)) + int(then.get("steps", 0)))
        else:
            ok = first["correct"]
            steps.append(int(first.get("steps", 0)))
        correct += int(bool(ok))
    return {"correct": correct, "total": total, "escalated": escalated, "steps": steps}


def _arrays(table: Outcomes, first: str, then: str, signal: str):
    """Signal values (NaN where missing), first correct, escalated correct: aligned per task, by task id."""
    values, a, b = [], [], []
    for task in sorted(table):
        f, t = table[task].get(first), table[task].get(then)
        if f is None or t is None:
            continue
        v = (f.get("signals") or {}).get(signal)
        values.append(np.nan if v is None else float(v))
        a.append(bool(f["correct"]))
        b.append(bool(t["correct"]) if t.get("answer") is not None else bool(f["correct"]))
    return np.array(values, dtype=float), np.array(a), np.array(b)


def fit_threshold(values: np.ndarray, first_ok: np.ndarray, then_ok: np.ndarray) -> Tuple[float, int]:
    """The threshold (escalate when the value is below it; a missing value always escalates)
    with the most correct answers on these tasks, fewest escalations on a tie; and that count."""
    known = np.sort(np.unique(values[~np.isnan(values)]))
    if known.size == 0:
        return 0.0, int(then_ok.sum())
    cuts = np.concatenate([[known[0] - 1.0], (known[:-1] + known[1:]) / 2, [known[-1] + 1.0]])
    best_cut, best = float(cuts[0]), -1
    for cut in cuts:  # ascending: a later cut escalates more, so it must be strictly better
        escalate = np.isnan(values) | (values < cut)
        count = int(np.where(escalate, then_ok, first_ok).sum())
        if count > best:
            best_cut, best = float(cut), count
    return round(best_cut, 4), best


def cross_validated(values: np.ndarray, first_ok: np.ndarray, then_ok: np.ndarray,
                    folds: int = FOLDS) -> Tuple[np.ndarray, int]:
    """Per task, whether the policy answers correctly when each fold's threshold is fitted on
    the other folds; and the escalations that made."""
    n = values.size
    index = np.arange(n)
    policy_ok = np.zeros(n, dtype=bool)
    escalated = 0
    for k in range(folds):
        test = index % folds == k
        if not test.any():
            continue
        cut, _ = fit_threshold(values[~test], first_ok[~test], then_ok[~test])
        escalate = np.isnan(values[test]) | (values[test] < cut)
        policy_ok[test] = np.where(escalate, then_ok[test], first_ok[test])
        escalated += int(escalate.sum())
    return policy_ok, escalated


def sign_test_z(pairs: int, alpha: float = FAMILY_ALPHA) -> float:
    """The one-sided z a sign test must clear so that, over ``pairs`` candidate policies, the
    chance that any one passes by luck stays below ``alpha`` (Bonferroni)."""
    return NormalDist().inv_cdf(1 - alpha / max(1, pairs))


def beats(policy_ok: np.ndarray, first_ok: np.ndarray, z: float) -> Tuple[bool, int, int]:
    """Whether the policy beats its first configuration on the same tasks by more than chance:
    a one-sided sign test on the tasks where they differ (wins - losses > z * sqrt(wins + losses),
    the normal approximation). With dozens of candidate policies, the best one's lead over its
    first stage is often luck (issue 13: a cascade 5 tasks of 80 ahead of its first stage in
    calibration did 4 points worse on held-out tasks). Also returns (wins, losses)."""
    wins = int(np.sum(policy_ok & ~first_ok))
    losses = int(np.sum(~policy_ok & first_ok))
    return wins - losses > max(0.0, z * math.sqrt(wins + losses)), wins, losses


def fit_policies(records: Sequence[Mapping[str, object]], accuracy_rows: Sequence[Mapping[str, object]],
                 task_set: str) -> List[Dict[str, object]]:
    """Policy rows for the manifest: the cascades (and anytime policies) worth planning with."""
    table = outcomes(records)
    accuracy = {str(r["key"]): float(r["accuracy"]) for r in accuracy_rows}
    keys = sorted(accuracy)
    firsts = [k for k in keys if Config.from_key(k).strategy == "greedy"]
    z = sign_test_z(len(firsts) * max(0, len(keys) - 1))
    rows: List[Dict[str, object]] = []
    for first in firsts:
        for then in keys:
            if then == first:
                continue
            best: Optional[Dict[str, object]] = None
            for signal in SIGNALS + (ALWAYS,):
                row = _fit_one(table, first, then, signal, task_set, z)
                if row is not None and (best is None or (row["correct"], -row["escalated_share"]) >
                                        (best["correct"], -best["escalated_share"])):
                    best = row
            if best is not None and best["beats_first"]:
                rows.append(best)
    rows.sort(key=lambda r: (-float(r["accuracy"]), float(r["escalated_share"]), str(r["key"])))
    return rows[:MAX_POLICIES]


def _fit_one(table: Outcomes, first: str, then: str, signal: str, task_set: str,
             z: float) -> Optional[Dict[str, object]]:
    if signal == ALWAYS:
        policy = Cascade(Config.from_key(first), Config.from_key(then), ALWAYS)
        result = replay(policy, table)
        if result["total"] < MIN_TASKS:
            return None
        correct, escalated, total = int(result["correct"]), int(result["escalated"]), int(result["total"])
        fit_correct = correct
        _, a, b = _arrays(table, first, then, SIGNALS[0])
        policy_ok = b
    else:
        values, a, b = _arrays(table, first, then, signal)
        if values.size < MIN_TASKS or np.isnan(values).all():
            return None
        threshold, fit_correct = fit_threshold(values, a, b)
        policy_ok, escalated = cross_validated(values, a, b)
        correct, total = int(policy_ok.sum()), values.size
        policy = Cascade(Config.from_key(first), Config.from_key(then), signal, threshold)
    significant, wins, losses = beats(policy_ok, a, z)
    low, high = wilson_interval(correct, total)
    return {**policy.to_dict(), "key": policy.key, "task_set": task_set, "correct": correct, "total": total,
            "beats_first": significant, "wins_vs_first": wins, "losses_vs_first": losses,
            "accuracy": round(correct / total, 4), "fit_accuracy": round(fit_correct / total, 4),
            "ci_low": round(low, 4), "ci_high": round(high, 4), "escalated_share": round(escalated / total, 4)}
