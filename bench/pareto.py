"""Benchmark: the planner against every static configuration, across deadlines.

1. Bundle with SmolLM2-135M-Instruct (Q4_1) and Gemma-3-270M (Q4_K_M) (shared with
   bench/predict.py).
2. Profile this machine (--quick), unless --profile gives one.
3. Calibrate the accuracy table on the first --calib-tasks test tasks of the task set.
4. Held-out tasks (the next --eval-tasks):
   - every static configuration of the grid runs each task once, without a deadline,
     measured for real (latency, answer, estimated energy). At deadline D a static
     configuration counts as a hit when it finished within D, and as correct only when it
     was correct *and* finished within D (a late answer is no answer for a robot);
   - the planner (``Runtime.generate(strategy="auto")``) runs each task under each
     deadline, for real: its hit rate, accuracy and joules at D are measured directly.
   Every request starts from a cold prompt cache, as the planner's latency model assumes.
5. Targets (issue 5): planner deadline hit rate >= 99%; planner accuracy >= that of the
   best static configuration that meets >= 99% of deadlines, at every deadline.

Writes bench/results/pareto-<stamp>.json (raw), .md (table) and .png (plot).
Energy is estimated (TDP x load curve) on machines without power sensors, and says so.

Usage: python bench/pareto.py [--calib-tasks 40] [--eval-tasks 20] [--task-set arithmetic]
                              [--deadlines 0.25,0.5,1,2,4,10] [--profile FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from predict import bench_bundle  # noqa: E402

from edgert.calibrate import DEFAULT_GRID, Grid, calibrate  # noqa: E402
from edgert.planner import wilson_interval  # noqa: E402
from edgert.profiler.measure import profile_device  # noqa: E402
from edgert.profiler.profile import DeviceProfile  # noqa: E402
from edgert.devices.cpu import default_threads  # noqa: E402
from edgert.runtime import Runtime  # noqa: E402
from edgert.tasks import load_tasks, score  # noqa: E402


def log(message: str) -> None:
    print(message, flush=True)


def run_static(rt: Runtime, task, config, task_set: str):
    rt.forget_cache()
    r = rt.generate(task.prompt, strategy=config.strategy, variant=config.variant, max_tokens=config.answer_tokens,
                    n=config.n, think_tokens=config.think_tokens or None, task_set=task_set, seed=0)
    return {"config": config.key, "task": task.id, "latency_ms": r.latency_ms, "answer": r.answer,
            "correct": score(task, r.answer), "energy_j": r.energy_j,
            "tokens_out": r.tokens_out}


def run_planner(rt: Runtime, task, deadline_s: float, task_set: str):
    rt.forget_cache()
    r = rt.generate(task.prompt, deadline_s=deadline_s, strategy="auto", task_set=task_set, seed=0)
    return {"deadline_s": deadline_s, "task": task.id, "latency_ms": r.latency_ms, "met": bool(r.deadline_met),
            "answer": r.answer, "correct": score(task, r.answer), "config": r.config,
            "feasible": r.plan["feasible"], "energy_j": r.energy_j, "finish": r.finish_reason,
            "overshoot_ms": r.latency_ms - deadline_s * 1000, "planning_ms": r.plan["planning_ms"]}


def summarize(statics, planner, deadlines, keys, table=()):
    """Per deadline: the planner, the best static configuration meeting >= 99% of deadlines
    (chosen on the evaluation tasks: an upward-biased oracle), and the static configuration
    calibration alone would pick among those (highest calibrated accuracy)."""
    calibrated = {}
    for row in table:
        calibrated[row["key"]] = calibrated.get(row["key"], 0.0) + row["correct"] / max(row["total"], 1)
    rows = []
    for d in deadlines:
        p = [r for r in planner if r["deadline_s"] == d]
        hit = sum(r["met"] for r in p) / len(p)
        acc = sum(r["correct"] and r["met"] for r in p) / len(p)
        per_static = []
        for key in keys:
            s = [r for r in statics if r["config"] == key]
            hits = [r["latency_ms"] <= d * 1000 for r in s]
            per_static.append({"config": key, "hit": sum(hits) / len(s),
                               "accuracy": sum(r["correct"] and h for r, h in zip(s, hits)) / len(s),
                               "energy_j": statistics.mean(r["energy_j"] or 0 for r in s)})
        reliable = [x for x in per_static if x["hit"] >= 0.99]
        best = max(reliable, key=lambda x: x["accuracy"]) if reliable else None
        picked = max(reliable, key=lambda x: (calibrated.get(x["config"], 0.0), x["accuracy"])) if reliable and calibrated else None
        low, high = wilson_interval(round(acc * len(p)), len(p))
        rows.append({
            "deadline_s": d, "planner_hit_rate": hit, "planner_accuracy": acc, "planner_ci": [low, high],
            "planner_energy_j": statistics.mean(r["energy_j"] or 0 for r in p),
            "planner_overshoot_p99_ms": sorted(r["overshoot_ms"] for r in p)[max(0, int(0.99 * len(p)) - 1)],
            "planner_configs": sorted({f"{r['config']['variant']}|{r['config']['strategy']}|n{r['config']['n']}"
                                       f"|t{r['config']['think_tokens']}|a{r['config']['answer_tokens']}" for r in p}),
            "best_static": best["config"] if best else None,
            "best_static_accuracy": best["accuracy"] if best else None,
            "best_static_energy_j": best["energy_j"] if best else None,
            "statics_meeting_99pct": len(reliable),
            "calibration_pick": picked["config"] if picked else None,
            "calibration_pick_accuracy": picked["accuracy"] if picked else None,
            "target_hit_rate_met": hit >= 0.99,
            "target_accuracy_met": best is None or acc >= best["accuracy"],
        })
    return rows


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc_ax, hit_ax, j_ax) = plt.subplots(1, 3, figsize=(15, 4.6))
    d = [r["deadline_s"] for r in rows]
    acc_ax.plot(d, [r["planner_accuracy"] for r in rows], "o-", label="planner")
    acc_ax.fill_between(d, [r["planner_ci"][0] for r in rows], [r["planner_ci"][1] for r in rows], alpha=0.15)
    acc_ax.plot(d, [r["best_static_accuracy"] if r["best_static_accuracy"] is not None else float("nan") for r in rows],
                "s--", label="best static meeting >= 99% of deadlines")
    hit_ax.plot(d, [r["planner_hit_rate"] for r in rows], "o-", label="planner")
    hit_ax.axhline(0.99, color="tab:red", ls=":", lw=1, label="target 99%")
    j_ax.plot(d, [r["planner_energy_j"] for r in rows], "o-", label="planner")
    j_ax.plot(d, [r["best_static_energy_j"] if r["best_static_energy_j"] is not None else float("nan") for r in rows],
              "s--", label="best static")
    for ax, label in ((acc_ax, "accuracy (held-out tasks)"), (hit_ax, "deadline hit rate"), (j_ax, "joules per request (estimated)")):
        ax.set_xscale("log")
        ax.set_xlabel("deadline (s)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task-set", default="arithmetic")
    parser.add_argument("--calib-tasks", type=int, default=40)
    parser.add_argument("--eval-tasks", type=int, default=20)
    parser.add_argument("--deadlines", default="0.25,0.5,1,2,4,10")
    parser.add_argument("--profile", type=Path, help="reuse this device profile instead of profiling")
    parser.add_argument("--answer-tokens", default="16,48")
    parser.add_argument("--think-tokens", default="48")
    parser.add_argument("--ns", default="3,5")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--summarize", type=Path, help="only recompute the summary of a recorded JSON and print it")
    args = parser.parse_args()
    if args.summarize:
        data = json.loads(args.summarize.read_text())
        keys = sorted({r["config"] for r in data["statics"]})
        print(json.dumps(summarize(data["statics"], data["planner"], sorted({r["deadline_s"] for r in data["planner"]}),
                                   keys, data["accuracy_table"]), indent=1))
        return
    deadlines = [float(x) for x in args.deadlines.split(",")]
    grid = Grid(answer_tokens=tuple(int(x) for x in args.answer_tokens.split(",")),
                think_tokens=tuple(int(x) for x in args.think_tokens.split(",")),
                ns=tuple(int(x) for x in args.ns.split(",")), strategies=DEFAULT_GRID.strategies)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    threads = default_threads()
    bundle = bench_bundle()
    started = time.perf_counter()

    if args.profile:
        profile = DeviceProfile.load(args.profile)
    else:
        log("profiling (--quick) ...")
        profile = profile_device(bundle, quick=True, threads=threads)
        profile.save(args.out / f"pareto-profile-{stamp}.json")
    tasks = load_tasks(args.task_set)
    calib, held_out = tasks.test()[: args.calib_tasks], tasks.test()[args.calib_tasks: args.calib_tasks + args.eval_tasks]
    log(f"calibrating on {len(calib)} tasks x {len(bundle.variants)} variants (resumable) ...")
    t0 = time.perf_counter()
    rows = calibrate(bundle, tasks, grid=grid, limit=args.calib_tasks, threads=threads,
                     progress=lambda label, d, t: print(f"\r  {label:<50} {d}/{t}", end="", flush=True))
    log(f"\ncalibration took {time.perf_counter() - t0:.0f} s")
    configs = [c for v in bundle.variants for c in grid.configs(v.name)]

    statics, planner = [], []
    with Runtime(bundle, profile=profile, n_threads=threads) as rt:
        rt.preload()
        log(f"static configurations: {len(configs)} x {len(held_out)} tasks ...")
        t0 = time.perf_counter()
        for i, task in enumerate(held_out):
            for config in configs:
                statics.append(run_static(rt, task, config, args.task_set))
            print(f"\r  task {i + 1}/{len(held_out)}", end="", flush=True)
        log(f"\nstatic runs took {time.perf_counter() - t0:.0f} s")
        rt.latency.reset()  # the planner starts from the profile alone, as a fresh runtime would
        log(f"planner: {len(deadlines)} deadlines x {len(held_out)} tasks ...")
        t0 = time.perf_counter()
        for i, task in enumerate(held_out):
            for d in deadlines:
                planner.append(run_planner(rt, task, d, args.task_set))
            print(f"\r  task {i + 1}/{len(held_out)}", end="", flush=True)
        log(f"\nplanner runs took {time.perf_counter() - t0:.0f} s")
        corrections = dict(rt.latency.corrections)
        sigmas = {k: round(v, 4) for k, v in rt.latency.sigmas().items()}

    keys = [c.key for c in configs]
    summary = summarize(statics, planner, deadlines, keys, rows)
    result = {
        "stamp": stamp, "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": threads},
        "task_set": args.task_set, "calib_tasks": len(calib), "eval_tasks": len(held_out), "grid": vars(grid),
        "profile": {"kind": profile.kind, "created_at": profile.created_at,
                    "energy": {n: v.energy.get("provenance") for n, v in profile.variants.items()}},
        "accuracy_table": rows, "summary": summary, "statics": statics, "planner": planner,
        "final_corrections": corrections, "final_sigma": sigmas, "elapsed_s": time.perf_counter() - started,
        "planning_ms_median": statistics.median(r["planning_ms"] for r in planner),
    }
    (args.out / f"pareto-{stamp}.json").write_text(json.dumps(result, indent=1))
    plot(summary, args.out / f"pareto-{stamp}.png")
    lines = [f"# pareto {stamp}", "", f"task set {args.task_set}: calibrated on {len(calib)} tasks, evaluated on "
             f"{len(held_out)} held-out tasks; {len(configs)} static configurations; energy estimated (no sensor)"
             if profile.variants and all(v.energy.get("provenance") != "measured" for v in profile.variants.values())
             else "", "",
             "| deadline | planner hit rate | planner accuracy (95% CI) | best static >= 99% hits | its accuracy | planner J | static J | planner overshoot p99 | targets |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in summary:
        ok = ("hit " + ("ok" if r["target_hit_rate_met"] else "MISSED") + ", acc "
              + ("ok" if r["target_accuracy_met"] else "MISSED"))
        lines.append(
            f"| {r['deadline_s']:g} s | {r['planner_hit_rate']:.0%} | {r['planner_accuracy']:.0%} "
            f"({r['planner_ci'][0]:.0%}-{r['planner_ci'][1]:.0%}) | {r['best_static'] or 'none'} | "
            + (f"{r['best_static_accuracy']:.0%}" if r["best_static_accuracy"] is not None else "-")
            + f" | {r['planner_energy_j']:.1f} | "
            + (f"{r['best_static_energy_j']:.1f}" if r["best_static_energy_j"] is not None else "-")
            + f" | {r['planner_overshoot_p99_ms']:+.1f} ms | {ok} |")
    lines += ["", f"median planning time {result['planning_ms_median']:.2f} ms; final corrections {corrections}; final sigma {sigmas}"]
    (args.out / f"pareto-{stamp}.md").write_text("\n".join(lines) + "\n")
    log("\n".join(lines))


if __name__ == "__main__":
    main()
