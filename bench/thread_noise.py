"""Benchmark: how repeatable llama.cpp timings are at each thread count on this machine.

For every thread count from 1 to the number of usable CPUs, load SmolLM2-135M-Instruct and
measure back to back, N times each: a 256-token prefill, and the mean of 8 decode steps of
4 sequences at that context. Reports per thread count the median, p10 and p90 and the
p90/p10 ratio (the spread a single run can land in), and the speed-up over 1 thread.

Why: llama.cpp's threads meet at a barrier after every operation, so on a machine whose
cores also run other work, using every core makes single runs noisier. The profile and the
planner predict single runs; bench/predict.py's accuracy depends on this spread.

Writes bench/results/thread_noise-<stamp>.json. Usage: python bench/thread_noise.py [--repeats 25]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
from pathlib import Path

from edgert.models import packaged_model_path
from edgert.runners.llama_cpp import LlamaCppRunner

PROMPT, BATCH, STEPS = 256, 4, 8


def quantiles(values):
    ordered = sorted(values)
    pick = lambda q: ordered[round(q * (len(ordered) - 1))]  # noqa: E731
    return {"p10": pick(0.1), "median": statistics.median(ordered), "p90": pick(0.9), "p90_over_p10": pick(0.9) / pick(0.1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    model = packaged_model_path("smollm2-135m-instruct")
    results = {}
    for threads in range(1, cpus + 1):
        runner = LlamaCppRunner(model, n_ctx=PROMPT + BATCH * (STEPS + 1) + 16, n_threads=threads)
        runner.load()
        try:
            runner.measure_prefill_ms(64)  # warm-up: fault the weights in
            prefill = [runner.measure_prefill_ms(PROMPT) for _ in range(args.repeats)]
            decode = [statistics.mean(runner.measure_decode_ms(PROMPT, BATCH, STEPS + 1)[1:]) for _ in range(args.repeats)]
        finally:
            runner.close()
        results[threads] = {"prefill_ms": quantiles(prefill), "decode_step_ms": quantiles(decode),
                            "raw": {"prefill_ms": prefill, "decode_step_ms": decode}}
        print(f"{threads} thread(s): prefill {PROMPT} median {results[threads]['prefill_ms']['median']:.0f} ms, "
              f"p90/p10 {results[threads]['prefill_ms']['p90_over_p10']:.3f}; decode x{BATCH} step median "
              f"{results[threads]['decode_step_ms']['median']:.2f} ms, p90/p10 {results[threads]['decode_step_ms']['p90_over_p10']:.3f}")
    for threads, r in results.items():
        for key in ("prefill_ms", "decode_step_ms"):
            r[key]["speedup_vs_1_thread"] = results[1][key]["median"] / r[key]["median"]
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": "thread_noise", "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": {"platform": platform.platform(), "cpus": cpus},
              "workload": {"model": "smollm2-135m-instruct", "prompt": PROMPT, "batch": BATCH, "steps": STEPS,
                           "repeats": args.repeats},
              "results": results}
    path = args.out / f"thread_noise-{stamp}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
