"""Replan a recorded bench/pareto.py run's requests with the current planner, without generating.

For each held-out task and deadline it asks the runtime's planner (models loaded, prompts
tokenized as in the run, the run's final latency corrections) what it would choose now. A
plain configuration's outcome is looked up in the run's static records (measured, same
runtime); a policy's only where the run's planner chose the same one for that request.
Requests it cannot look up are left out and counted. An estimate of a planner change,
not a measurement: rerun bench/pareto.py for that.

Usage: python bench/replan_pareto.py bench/results/pareto-<stamp>.json [--profile FILE]
"""
import argparse
import json, collections
from edgert.bundle import Bundle
from edgert.paths import cache_dir
from edgert.runtime import Runtime
from edgert.request import Request
from edgert.runners.types import Deadline
from edgert.tasks import load_tasks
parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("run", help="a bench/pareto.py JSON")
parser.add_argument("--profile", default=None, help="the run's device profile (default: the newest pareto-profile-*.json beside it)")
args = parser.parse_args()
d = json.load(open(args.run))
if args.profile is None:
    import glob, os
    args.profile = sorted(glob.glob(os.path.join(os.path.dirname(args.run) or ".", "pareto-profile-*.json")))[-1]
static = {(r["task"], r["config"]): r for r in d["statics"]}
recorded = {(r["task"], r["deadline_s"]): r for r in d["planner"] if r["power_w"] is None}
bundle = Bundle.open(cache_dir("bundles", "bench-three-sizes"))
tasks = load_tasks(cache_dir("bench", "pareto-mix-eval.jsonl")).test()
out = collections.defaultdict(lambda: [0, 0, 0, 0.0])  # correct, known, total, latency
deadlines = sorted({r["deadline_s"] for r in d["planner"] if r["power_w"] is None})
with Runtime(bundle, profile=args.profile, n_threads=2) as rt:
    rt.preload()
    rt.latency.corrections.update(d["final_corrections"])
    for task in tasks:
        for D in deadlines:
            req = Request(task.prompt, deadline_s=D, strategy="auto", task_set="pareto-mix-calib",
                          answer_type=task.type, choices=task.choices, seed=0)
            config, summary, _, policy = rt._plan(req, Deadline(D))  # the runtime's own planning step
            row = out[D]; row[2] += 1
            old = recorded[(task.id, D)]
            if policy is None:
                s = static[(task.id, config.key)]
                row[0] += s["correct"] and s["latency_ms"] <= D * 1000; row[1] += 1; row[3] += s["latency_ms"]
            elif summary["label"] == old["label"]:
                row[0] += old["correct"] and old["met"]; row[1] += 1; row[3] += old["latency_ms"]
for D, (c, k, n, lat) in sorted(out.items()):
    print(f"{D:5g} s: replayed {k}/{n} requests; accuracy {c / max(k, 1):.1%} of those; "
          f"mean latency {lat / max(k, 1):.0f} ms (uncut: a deadline would cut the longer ones)")
