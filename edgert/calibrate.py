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
from .progress import Progress
from .planner import wilson_interval
from .devices.cpu import default_threads
from .runners.registry import open_runner
from .runners.types import GenerationResult, SamplingParams
from .runners.base import Runner
from .strategies import (
    SAMPLE_TEMPERATURE,
    SAMPLE_TOP_P,
    AnswerSpec,
    Config,
    EarlyStoppingSelfConsistency,
    ThinkingFormat,
    vote,
    vote_decided,
)


CALIBRATION_DIR = "calibration"


@dataclass(frozen=True)
class Grid:
    """The configurations calibration measures for each variant."""

    answer_tokens: Tuple[int, ...] = (16, 48)
    think_tokens: Tuple[int, ...] = (32, 96)
    ns: Tuple[int, ...] = (3, 5)
    strategies: Tuple[str, ...] = ("greedy", "sc", "esc", "bon", "bf")

    def configs(self, variant: str) -> List[Config]:
        out: List[Config] = []
        for a in self.answer_tokens:
            if "greedy" in self.strategies:
                out.append(Config(variant, "greedy", a))
            for strategy in ("sc", "esc", "bon"):
                if strategy in self.strategies:
                    out += [Config(variant, strategy, a, n=n) for n in self.ns]
            if "bf" in self.strategies:
                out += [Config(variant, "bf", a, think_tokens=t) for t in self.think_tokens]
        return out

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


DEFAULT_GRID = Grid()
QUICK_GRID = Grid(answer_tokens=(24,), think_tokens=(48,), ns=(3,))


def task_seed(task_id: str, seed: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{task_id}".encode()).digest()[:4], "little")


#: where a base model's few-shot answer ends (the next line, or a new question)
BASE_MODEL_STOPS = ("\n", "Question:")


def prepare_task(runner: Runner, task, shots: Sequence = (), stop: Sequence[str] = ()) -> Tuple[List[int], AnswerSpec]:
    """Token ids and answer spec of a task: chat-formatted for chat models, few-shot for base
    models. Calibration and the runtime both use it, so a request is asked the way its
    accuracy was measured."""
    from .tasks import format_prompt

    chat = runner.has_chat_template
    text = format_prompt(task, chat=chat, shots=() if chat else shots)
    spec = AnswerSpec(
        kind=task.type,
        choices=tuple(task.choices),
        pattern=task.pattern,
        stop=tuple(stop) + (() if chat else BASE_MODEL_STOPS),
        thinking=ThinkingFormat.for_template(runner.chat_template_source),
    )
    return runner.encode(text, chat=chat), spec


class _Prefix:
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


def run_task(runner: Runner, variant: str, task, task_set, grid: Grid, seed: int) -> Dict[str, Dict[str, object]]:
    """Every configuration of ``grid`` on one task; {config key: {correct, samples, tokens}}."""
    from .answers import is_correct

    ids, spec = prepare_task(runner, task, task_set.shots())
    a_max, n_max = max(grid.answer_tokens), max(grid.ns)
    out: Dict[str, Dict[str, object]] = {}

    def record(config: Config, answer: Optional[str], samples: int, tokens: int, steps: int) -> None:
        """steps: decode steps the configuration takes on this task (batched samples share a
        step, so a batch takes as many steps as its longest sample)."""
        out[config.key] = {"answer": answer, "correct": bool(is_correct(answer, task.answer, task.type)),
                           "samples": samples, "tokens": tokens, "steps": steps}

    strategies = set(grid.strategies)
    if "greedy" in strategies:
        greedy = _Prefix(runner, runner.generate_ids(ids, SamplingParams(max_tokens=a_max, stop=spec.stop)), spec.stop)
        for a in grid.answer_tokens:
            record(Config(variant, "greedy", a), spec.extract(greedy.text(a)), 1, greedy.tokens(a), greedy.tokens(a))
    if strategies & {"sc", "esc", "bon"}:
        params = SamplingParams(max_tokens=a_max, temperature=SAMPLE_TEMPERATURE, top_p=SAMPLE_TOP_P,
                                seed=task_seed(task.id, seed), stop=spec.stop)
        samples = [_Prefix(runner, s, spec.stop) for s in runner.generate_many(ids, n_max, params)]
        for a in grid.answer_tokens:
            answers = [spec.extract(s.text(a)) for s in samples]
            scores = [s.score(a) for s in samples]
            tokens = [s.tokens(a) for s in samples]
            for n in grid.ns:
                majority, _ = vote(answers[:n], scores[:n])
                if "sc" in strategies:
                    record(Config(variant, "sc", a, n=n), majority, n, sum(tokens[:n]), max(tokens[:n]))
                if "esc" in strategies:
                    k = EarlyStoppingSelfConsistency.first_wave(n)
                    drawn = k if n == k or vote_decided(answers[:k], n - k) else n
                    steps = max(tokens[:k]) + (max(tokens[k:n]) if drawn > k else 0)
                    record(Config(variant, "esc", a, n=n), majority, drawn, sum(tokens[:drawn]), steps)
                if "bon" in strategies:
                    best = max(range(n), key=lambda i: scores[i])
                    record(Config(variant, "bon", a, n=n), answers[best], n, sum(tokens[:n]), max(tokens[:n]))
    if "bf" in strategies:
        fmt = spec.thinking or ThinkingFormat.for_template(None)
        open_ids = runner.tokenize_continuation(fmt.open)
        close_ids = runner.tokenize_continuation(fmt.close)
        stops = tuple(fmt.stop) + tuple(s for s in spec.stop if s.strip())
        thought = runner.generate_ids(ids + open_ids, SamplingParams(max_tokens=max(grid.think_tokens), stop=stops))
        for t in grid.think_tokens:
            if t >= thought.tokens_out and thought.finish_reason == "stop":
                think_ids = runner.tokenize_continuation(thought.text) if thought.text else []
            else:
                think_ids = thought.token_ids[:t]
            answer = _Prefix(runner, runner.generate_ids(ids + open_ids + think_ids + close_ids,
                                                         SamplingParams(max_tokens=a_max, stop=spec.stop)), spec.stop)
            for a in grid.answer_tokens:
                steps = min(len(think_ids), t) + answer.tokens(a)
                record(Config(variant, "bf", a, think_tokens=t), spec.extract(answer.text(a)), 1, steps, steps)
    return out


def progress_path(bundle: Bundle, task_set_name: str) -> Path:
    return bundle.root / CALIBRATION_DIR / f"{task_set_name}.jsonl"


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
            row = by_key.setdefault(key, {"config": Config(*_parse_key(key)), "correct": 0, "total": 0,
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
    from .strategies import strategy

    worst = sum(p.tokens for p in strategy(config.strategy).schedule(config, 1) if p.kind == "decode")
    if not steps or worst <= 0:
        return {}
    return {"worst_steps": worst, "steps_p95": float(np.percentile(steps, 95)),
            "steps_share_p95": round(min(1.0, float(np.percentile(steps, 95)) / worst), 4)}


def _parse_key(key: str) -> Tuple[str, str, int, int, int]:
    variant, strategy, n, t, a = key.split("|")
    return variant, strategy, int(a[1:]), int(n[1:]), int(t[1:])


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
    done = {(r["variant"], r["task"]) for r in _read_progress(path) if r.get("grid") == grid.digest and r.get("seed") == seed}
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
                _append(path, {"variant": variant.name, "task": task.id, "grid": grid.digest, "seed": seed, "results": results})
                count += 1
                if progress:
                    progress(f"{variant.name} {task.id}", count, total)
    wanted_ids = {t.id for t in tests}
    wanted_variants = {v.name for v in chosen}
    records = [r for r in _read_progress(path) if r.get("grid") == grid.digest and r.get("seed") == seed
               and r["task"] in wanted_ids and r["variant"] in wanted_variants]
    rows = aggregate(records, task_set.name)

    def merge(manifest) -> None:  # applied to the manifest as it is on disk, under the bundle's lock
        kept = [row for row in manifest.accuracy_table
                if not (row.get("task_set") == task_set.name and row.get("variant") in wanted_variants)]
        manifest.accuracy_table = kept + rows

    bundle.manifest = update_manifest(bundle.root, merge).manifest
    return rows
