"""Calibration: the accuracy of every configuration (variant x budgets x strategy x N) on a task set.

For each task and variant the expensive generations run once, at the largest budget and N
of the grid, and the smaller configurations are read off them:

- a budget of ``a`` tokens produces exactly the first ``a`` tokens of a longer generation
  with the same seed, so the answer at budget ``a`` comes from that prefix;
- self-consistency with ``n`` samples uses the first ``n`` of the samples (they are drawn
  independently, so any n of them are a fair sample of n);
- early-stopping self-consistency always returns the answer that the full vote would
  (it stops only when the rest cannot change the vote); it is recorded with the number of
  samples it would have drawn, which is where it saves time;
- budget forcing with thinking budget ``t`` keeps the first ``t`` thinking tokens and then
  runs its own forced answer phase.

Results are appended per task to ``calibration/<task set>.jsonl`` in the bundle, so an
interrupted run resumes where it stopped; the aggregated table (accuracy with a 95% Wilson
interval, sample counts, mean tokens and samples) goes into the manifest's accuracy_table.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .bundle import Bundle, update_manifest
from .errors import UsageError
from .fileio import atomic_write_bytes
from .progress import Progress
from .policies import fit_policies
from .stats import wilson_interval
from .devices.cpu import default_threads
from .runners.registry import open_runner
from .runners.base import Runner
from .strategies import Config, Draws, Strategy, strategy, task_seed
from .tasks import BUILTIN_TASK_SETS, TaskSet, is_generated, load_tasks, parse_tasks, prepare_task, score, task_set_name


CALIBRATION_DIR = "calibration"
#: version of the per-task records; records of another version are measured again
#: (2: every result carries the answer's confidence signals)
RECORDS_VERSION = 2


@dataclass(frozen=True)
class Grid:
    """The configurations calibration measures for each variant."""

    answer_tokens: Tuple[int, ...] = (16, 48)
    think_tokens: Tuple[int, ...] = (32, 96)
    ns: Tuple[int, ...] = (3, 5)
    strategies: Tuple[str, ...] = ("greedy", "sc", "esc", "bon", "bf")
    #: sampling temperatures of sc/esc/bon (empty: the one default, SAMPLE_TEMPERATURE)
    temperatures: Tuple[float, ...] = ()

    def configs(self, variant: str) -> List[Config]:
        """Every configuration of the grid for one variant, by answer budget then strategy."""
        families = [strategy(name) for name in Strategy.registry if name in self.strategies]
        return [config for a in self.answer_tokens for family in families
                for config in family.grid_configs(self, variant, a)]

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


DEFAULT_GRID = Grid()
QUICK_GRID = Grid(answer_tokens=(24,), think_tokens=(48,), ns=(3,))


def run_task(runner: Runner, variant: str, task, task_set, grid: Grid, seed: int) -> Dict[str, Dict[str, object]]:
    """Every configuration of ``grid`` on one task; {config key: {answer, correct, samples,
    tokens, steps}}. The generations run once (``Draws``); each strategy replays its own."""
    ids, spec = prepare_task(runner, task, task_set.shots())
    draws = Draws(runner, ids, spec, answer_tokens=max(grid.answer_tokens), n=max(grid.ns),
                  seed=task_seed(task.id, seed))
    out: Dict[str, Dict[str, object]] = {}
    for name in Strategy.registry:
        if name not in grid.strategies:
            continue
        for trial in strategy(name).replay(draws, grid, variant):
            out[trial.config.key] = {"answer": trial.answer, "correct": score(task, trial.answer),
                                     "samples": trial.samples, "tokens": trial.tokens, "steps": trial.steps,
                                     "signals": trial.signals}
    return out


def progress_path(bundle: Bundle, task_set_name: str) -> Path:
    return bundle.root / CALIBRATION_DIR / f"{task_set_name}.jsonl"


def saved_task_set_path(bundle: Bundle, task_set_name: str) -> Path:
    """Where calibration keeps a copy of a user's task set, so that planning can ask its
    questions the same way by name alone (``task_set="my"`` after ``--tasks my.jsonl``)."""
    return bundle.root / CALIBRATION_DIR / f"{task_set_name}.tasks.jsonl"


def task_set_for(bundle: Bundle, source: str) -> TaskSet:
    """The task set a request or a plan names: a builtin name, the name of a task set this
    bundle was calibrated on, an ``rg:`` spec (the bundle's saved copy when it has one, so a
    device needs no reasoning-gym), or a JSONL file (named by its file's stem, as calibration
    names it; read afresh, as the user may have changed it)."""
    name = task_set_name(source)
    if source not in BUILTIN_TASK_SETS and (name == source or is_generated(source)):  # not a file
        saved = saved_task_set_path(bundle, name)
        if saved.is_file():
            return TaskSet(name, parse_tasks(saved.read_text(encoding="utf-8"), str(saved)))
    return load_tasks(source)


def _save_task_set(bundle: Bundle, task_set: TaskSet) -> None:
    if task_set.name in BUILTIN_TASK_SETS:
        return
    text = "".join(json.dumps(t.to_json(), sort_keys=True) + "\n" for t in task_set.tasks)
    atomic_write_bytes(saved_task_set_path(bundle, task_set.name), text.encode())


def _read_progress(path: Path) -> List[Dict[str, object]]:
    """Records written so far; a torn last line (the run was killed mid-write) is ignored."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _append(path: Path, record: Dict[str, object]) -> None:
    """Append one record as a line (fsynced); a torn last line from a killed run is closed first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    with open(path, "a+b") as f:
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                line = b"\n" + line
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def aggregate(records: Iterable[Dict[str, object]], task_set: str) -> List[Dict[str, object]]:
    """Accuracy table rows from per-task records."""
    by_key: Dict[str, Dict[str, object]] = {}
    for record in records:
        for key, r in record["results"].items():  # type: ignore[union-attr]
            row = by_key.setdefault(key, {"config": Config.from_key(key), "correct": 0, "total": 0,
                                          "samples": 0, "tokens": 0, "steps": []})
            row["correct"] += int(r["correct"])
            row["total"] += 1
            row["samples"] += r["samples"]
            row["tokens"] += r["tokens"]
            if "steps" in r:
                row["steps"].append(r["steps"])
    rows = []
    for key, row in sorted(by_key.items()):
        total, correct = row["total"], row["correct"]
        low, high = wilson_interval(correct, total)
        config: Config = row["config"]
        rows.append({
            **config.to_dict(), "task_set": task_set, "key": key, "correct": correct, "total": total,
            "accuracy": correct / total, "ci_low": round(low, 4), "ci_high": round(high, 4),
            "mean_samples": round(row["samples"] / total, 3), "mean_tokens": round(row["tokens"] / total, 2),
            **_steps_summary(row["steps"], config),
        })
    return rows


def _steps_summary(steps: List[int], config: Config) -> Dict[str, object]:
    """How much of its worst-case decode work a configuration used: the planner prices the
    95th percentile of that share instead of the full budgets (a request that runs longer is
    still cut at its deadline)."""
    worst = sum(p.tokens for p in strategy(config.strategy).schedule(config, 1) if p.kind == "decode")
    if not steps or worst <= 0:
        return {}
    return {"worst_steps": worst, "steps_p95": float(np.percentile(steps, 95)),
            "steps_share_p95": round(min(1.0, float(np.percentile(steps, 95)) / worst), 4)}


def calibrate(
    bundle: Bundle,
    task_set,
    *,
    variants: Optional[Sequence[str]] = None,
    grid: Grid = DEFAULT_GRID,
    limit: Optional[int] = None,
    seed: int = 0,
    threads: Optional[int] = None,
    n_ctx: int = 2048,
    progress: Progress = None,
) -> List[Dict[str, object]]:
    """Measure the accuracy table of ``task_set`` for the bundle's variants and store it in
    the manifest (rows of other task sets are kept). Resumes from earlier progress."""

    tests = task_set.test()[:limit] if limit else task_set.test()
    if not tests:
        raise UsageError(f"task set {task_set.name!r} has no test tasks")
    chosen = [bundle.variant(name) for name in variants] if variants else bundle.variants
    path = progress_path(bundle, task_set.name)
    def current(r) -> bool:
        return r.get("grid") == grid.digest and r.get("seed") == seed and r.get("v") == RECORDS_VERSION

    done = {(r["variant"], r["task"]) for r in _read_progress(path) if current(r)}
    total = len(chosen) * len(tests)
    count = sum(1 for v in chosen for t in tests if (v.name, t.id) in done)
    if progress:
        progress("calibrating", count, total)
    for variant in chosen:
        todo = [t for t in tests if (variant.name, t.id) not in done]
        if not todo:
            continue
        with open_runner(bundle, variant, n_ctx=n_ctx, n_threads=threads or default_threads()) as runner:
            for task in todo:
                results = run_task(runner, variant.name, task, task_set, grid, seed)
                _append(path, {"variant": variant.name, "task": task.id, "grid": grid.digest, "seed": seed,
                               "v": RECORDS_VERSION, "results": results})
                count += 1
                if progress:
                    progress(f"{variant.name} {task.id}", count, total)
    wanted_ids = {t.id for t in tests}
    wanted_variants = {v.name for v in chosen}
    records = [r for r in _read_progress(path) if current(r) and r["task"] in wanted_ids and r["variant"] in wanted_variants]
    rows = aggregate(records, task_set.name)
    _save_task_set(bundle, task_set)

    def merge(manifest) -> None:  # applied to the manifest as it is on disk, under the bundle's lock
        kept = [row for row in manifest.accuracy_table
                if not (row.get("task_set") == task_set.name and row.get("variant") in wanted_variants)]
        manifest.accuracy_table = kept + rows
        # policies span variants: refit them on every current record of this task set
        table = [row for row in manifest.accuracy_table if row.get("task_set") == task_set.name]
        every = [r for r in _read_progress(path) if current(r) and r["task"] in wanted_ids]
        manifest.policy_table = [row for row in manifest.policy_table if row.get("task_set") != task_set.name] + \
            fit_policies(every, table, task_set.name)

    bundle.manifest = update_manifest(bundle.root, merge).manifest
    return rows
