"""Benchmark: edgert's llama.cpp runner against llama-cpp-python's own loop, and deadline overshoot.

1. Overhead: the same greedy generation (same prompt, same number of tokens) through
   ``LlamaCppRunner.generate`` (edgert's loop: numpy sampling, stop handling, deadline
   checks, per-step timing) and through ``llama_cpp.Llama.generate`` (llama.cpp's sampler),
   interleaved A/B in one process. Reports medians and the ratio.
2. Deadline overshoot: long generations with deadlines from 50 ms to 800 ms; reports how
   late (or early) the runner returned relative to the deadline, p50 and p99, against the
   median decode step.

Usage: python bench/runner_overhead.py [--reps 7] [--tokens 128] [--out bench/results]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from edgert.models import packaged_model_path
from edgert.runners.types import Deadline, SamplingParams
from edgert.runners.llama_cpp import LlamaCppRunner

PROMPT = "Write a very long story about a robot that explores the ocean, with many chapters."


def edgert_run(runner: LlamaCppRunner, prompt_ids_text: str, tokens: int) -> dict:
    start = time.perf_counter()
    result = runner.generate(prompt_ids_text, SamplingParams(max_tokens=tokens), chat=False)
    wall = time.perf_counter() - start
    return {"wall_s": wall, "tokens": result.tokens_out, "prefill_ms": result.prefill_ms}


def llama_run(llm, prompt_text: str, tokens: int) -> dict:
    llm.reset()
    ids = llm.tokenize(prompt_text.encode(), add_bos=True, special=True)
    start = time.perf_counter()
    n = 0
    first = None
    for _token in llm.generate(ids, temp=0.0, top_k=1, reset=True):
        if first is None:
            first = time.perf_counter()
        n += 1
        if n >= tokens:
            break
    wall = time.perf_counter() - start
    return {"wall_s": wall, "tokens": n, "prefill_ms": ((first or start) - start) * 1000}


def overshoot(runner: LlamaCppRunner, deadlines_s, reps: int) -> dict:
    rows = []
    for deadline_s in deadlines_s:
        for _ in range(reps):
            start = time.monotonic()
            result = runner.generate(PROMPT, SamplingParams(max_tokens=2000), deadline=Deadline(deadline_s, start=start))
            late_ms = (time.monotonic() - start - deadline_s) * 1000
            rows.append({"deadline_s": deadline_s, "late_ms": late_ms, "finish": result.finish_reason,
                         "tokens_out": result.tokens_out})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    import llama_cpp

    model = packaged_model_path()
    llm = llama_cpp.Llama(str(model), n_ctx=2048, n_threads=args.threads, n_threads_batch=args.threads, verbose=False)
    runner = LlamaCppRunner(model, n_ctx=2048, n_threads=args.threads)
    runner.load()
    # the chat-formatted prompt, fed raw to both loops so they see identical tokens
    prompt_text = runner.format_prompt(PROMPT)

    edgert_run(runner, prompt_text, 16)  # warm-up both
    llama_run(llm, prompt_text, 16)
    pairs = []
    for rep in range(args.reps):
        order = [("edgert", edgert_run, runner), ("llama_cpp", llama_run, llm)]
        if rep % 2:
            order.reverse()
        row = {}
        for name, fn, engine in order:
            row[name] = fn(engine, prompt_text, args.tokens)
        pairs.append(row)

    def per_token_ms(row):  # decode part only: wall minus time to first token
        return (row["wall_s"] * 1000 - row["prefill_ms"]) / max(1, row["tokens"] - 1)

    e_ms = [per_token_ms(p["edgert"]) for p in pairs]
    l_ms = [per_token_ms(p["llama_cpp"]) for p in pairs]
    ratios = [e / l for e, l in zip(e_ms, l_ms)]
    late = overshoot(runner, [0.05, 0.1, 0.2, 0.4, 0.8], reps=max(5, args.reps))
    step_ms = float(np.median(runner.generate(PROMPT, SamplingParams(max_tokens=64)).decode_step_ms))
    late_ms = [r["late_ms"] for r in late]

    summary = {
        "edgert_ms_per_token_median": statistics.median(e_ms),
        "llama_cpp_ms_per_token_median": statistics.median(l_ms),
        "ratio_edgert_over_llama_cpp_median": statistics.median(ratios),
        "median_decode_step_ms": step_ms,
        "overshoot_ms_p50": float(np.percentile(late_ms, 50)),
        "overshoot_ms_p99": float(np.percentile(late_ms, 99)),
        "overshoot_ms_max": float(max(late_ms)),
        "deadline_runs": len(late),
        "deadline_cut_share": sum(r["finish"] == "deadline" for r in late) / len(late),
    }
    record = {
        "benchmark": "runner_overhead",
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "threads": args.threads},
        "model": model.name,
        "tokens": args.tokens,
        "reps": args.reps,
        "summary": summary,
        "pairs": pairs,
        "overshoot": late,
    }
    runner.close()
    llm.close()
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = args.out / f"runner_overhead-{stamp}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    for key, value in summary.items():
        print(f"{key:40s} {value:10.3f}")
    print(f"raw results: {path}")


if __name__ == "__main__":
    main()
