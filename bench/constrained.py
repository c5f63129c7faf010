"""Benchmark: constrained decoding's cost, and valid answers by the deadline.

1. Speed (per model: SmolLM2-135M, 49k vocabulary; Gemma-3-270M, 262k): the same prompt
   (a long story) decoded up to a token budget, plainly and under a JSON schema whose one
   string field lets the answer run on, interleaved A/B, 1 thread. A token's cost is the
   loop's wall time per token after the prompt (decode step, sampling, and the mask when
   constrained). Reports the median ms per token of each, their ratio (goal: constrained
   >= 0.95x the plain speed), the mask time per token (median, p99) and the one-time build
   of llguidance's tokenizer.
2. Deadlines: 100 constrained requests (a small object schema, varied prompts, sampled)
   at each deadline through ``Runtime.run``, first with a new prompt each time, then with a
   cached prefix (fixed instructions and a short observation, as a control loop asks); per deadline the share that validates with
   jsonschema, the share flagged unsatisfied, any answer flagged valid that does not
   validate (must be 0) and the worst latency against the deadline.

Usage: python bench/constrained.py [--reps 9] [--tokens 48] [--requests 100] [--out bench/results]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import jsonschema
import numpy as np

from edgert.bundle import pack
from edgert.constraint import Constraint
from edgert.models import packaged_model_path
from edgert.runners.llama_cpp import LlamaCppRunner
from edgert.runners.types import SamplingParams
from edgert.runtime import Runtime

#: the speed run's schema: a string too long to finish within the budget, so both runs decode
#: the whole budget at the same context lengths (the constrained answer ends unfinished: that is
#: not what is measured here)
STORY = {"type": "object", "properties": {"story": {"type": "string", "minLength": 2000}}, "required": ["story"]}
ROBOT = {"type": "object", "properties": {"action": {"type": "string", "enum": ["stop", "slow", "go"]},
                                          "speed": {"type": "number"}},
         "required": ["action", "speed"], "additionalProperties": False}
PROMPT = "Write a long story about a robot that explores the ocean. Answer as JSON with a story field."
DEADLINES_S = (0.1, 0.2, 0.5, 1.0, 2.0)


def speed(model: str, reps: int, tokens: int) -> dict:
    path = packaged_model_path(model)
    with LlamaCppRunner(path, n_threads=1) as runner:
        started = time.perf_counter()
        guide = runner.guide()
        build_ms = (time.perf_counter() - started) * 1000
        ids = runner.encode(PROMPT) if runner.has_chat_template else runner.encode(PROMPT, chat=False)
        constraint = Constraint.json_schema(STORY)
        # no ignore_eos: its redraws of end tokens would cost the plain run more than the mask costs
        plain = SamplingParams(max_tokens=tokens)
        guided = SamplingParams(max_tokens=tokens, constraint=constraint)
        runner.generate_ids(ids, plain)  # warm up both paths
        runner.generate_ids(ids, guided)
        rows = {"plain": [], "constrained": []}
        masks = []
        for rep in range(reps):
            order = (("plain", plain), ("constrained", guided)) if rep % 2 == 0 else (("constrained", guided), ("plain", plain))
            for name, params in order:
                runner.forget_cache()
                result = runner.generate_ids(ids, params)
                steps = result.decode_step_ms
                # a token's cost is its decode step plus (constrained) its mask: the wall time of the loop
                per_token = (result.total_ms - result.prefill_ms) / max(1, result.tokens_out)
                rows[name].append({"ms_per_token": per_token, "tokens": result.tokens_out,
                                   "step_ms_median": statistics.median(steps) if steps else None,
                                   "satisfied": result.constraint_satisfied})
                if name == "constrained":
                    masks += result.mask_ms
    plain_ms = statistics.median(r["ms_per_token"] for r in rows["plain"])
    guided_ms = statistics.median(r["ms_per_token"] for r in rows["constrained"])
    return {"model": model, "vocab": guide.n_vocab, "tokenizer_build_ms": round(build_ms, 1),
            "plain_ms_per_token": round(plain_ms, 3), "constrained_ms_per_token": round(guided_ms, 3),
            "speed_ratio": round(plain_ms / guided_ms, 4), "goal_met": plain_ms / guided_ms >= 0.95,
            "mask_ms_median": round(float(np.median(masks)), 4), "mask_ms_p99": round(float(np.percentile(masks, 99)), 4),
            "raw": rows}


#: the cached-prefix case: a control loop's fixed instructions (the system message), then one
#: short observation per request; only the observation is evaluated each time
SYSTEM = ("You control a small robot. Each message reports what is ahead of it and how far. Answer with "
          "a JSON object: action is stop, slow or go; speed is in metres per second, 0 to 2. Stop for people "
          "and walls closer than 1 m, slow down below 3 m, otherwise go.")


def deadlines(bundle: Path, requests: int, cached_prefix: bool) -> list:
    out = []
    constraint = Constraint.json_schema(ROBOT)
    rng = np.random.default_rng(0)
    with Runtime(bundle, n_threads=1) as runtime:
        runtime.preload(constraints=True)
        system = SYSTEM if cached_prefix else None
        if cached_prefix:  # evaluate the fixed prefix once, untimed, as a control loop does at start-up
            runtime.generate("nothing, 5 m", system=system, max_tokens=1)
        for deadline_s in DEADLINES_S:
            rows = []
            for i in range(requests):
                metres = round(float(rng.uniform(0.2, 30)), 1)
                thing = ["a wall", "a person", "a box", "a dog", "nothing", "a ramp"][i % 6]
                if cached_prefix:
                    prompt = f"{thing}, {metres} m"
                else:
                    prompt = f"{thing.capitalize()} is {metres} m ahead of the robot. Decide: action and speed (m/s), as JSON."
                result = runtime.generate(prompt, system=system, deadline_s=deadline_s, max_tokens=64, temperature=0.7,
                                          seed=i, constraint=constraint)
                try:
                    jsonschema.validate(json.loads(result.text), ROBOT)
                    validates = True
                except (ValueError, jsonschema.ValidationError):
                    validates = False
                rows.append({"validates": validates, "satisfied": result.constraint_satisfied,
                             "latency_ms": result.latency_ms, "closed_tokens": result.generation.closed_tokens,
                             "finish_reason": result.finish_reason, "tokens_out": result.tokens_out,
                             "cached_tokens": result.generation.cached_tokens, "tokens_in": result.generation.tokens_in})
            out.append({
                "deadline_s": deadline_s, "requests": len(rows),
                "validated_share": sum(r["validates"] for r in rows) / len(rows),
                "flagged_unsatisfied_share": sum(not r["satisfied"] for r in rows) / len(rows),
                "flagged_valid_but_invalid": sum(r["satisfied"] and not r["validates"] for r in rows),
                "flagged_invalid_but_valid": sum(r["validates"] and not r["satisfied"] for r in rows),
                "closed_by_grammar": sum(r["closed_tokens"] > 0 for r in rows),
                "max_latency_ms": round(max(r["latency_ms"] for r in rows), 2),
                "median_latency_ms": round(statistics.median(r["latency_ms"] for r in rows), 2),
                "deadline_met_share": sum(r["latency_ms"] <= deadline_s * 1000 for r in rows) / len(rows),
                "raw": rows,
            })
            out[-1]["cached_prefix"] = cached_prefix
            print(f"  {deadline_s:g} s: {out[-1]['validated_share']:.0%} valid, "
                  f"{out[-1]['flagged_unsatisfied_share']:.0%} flagged, max {out[-1]['max_latency_ms']:.0f} ms", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--part", choices=("all", "speed", "deadlines"), default="all")
    args = parser.parse_args()
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    report = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
              "threads": 1, "reps": args.reps, "tokens": args.tokens}
    report["speed"] = []
    for model in ("smollm2-135m-instruct", "gemma-3-270m") if args.part != "deadlines" else ():
        row = speed(model, args.reps, args.tokens)
        print(f"{model}: plain {row['plain_ms_per_token']:.2f} ms/token, constrained {row['constrained_ms_per_token']:.2f}"
              f" -> {row['speed_ratio']:.3f}x; mask median {row['mask_ms_median']:.3f} ms, p99 {row['mask_ms_p99']:.3f};"
              f" tokenizer build {row['tokenizer_build_ms']:.0f} ms", flush=True)
        report["speed"].append(row)
    if args.part != "speed":
        with tempfile.TemporaryDirectory() as tmp:
            bundle = Path(tmp) / "smollm2"
            pack([packaged_model_path("smollm2-135m-instruct")], bundle, model_name="smollm2-135m-instruct")
            print("deadlines (SmolLM2, 1 thread), a new prompt each time:", flush=True)
            report["deadlines"] = deadlines(bundle, args.requests, cached_prefix=False)
            print("deadlines, a cached prefix (fixed instructions, a short observation each time):", flush=True)
            report["deadlines_cached_prefix"] = deadlines(bundle, args.requests, cached_prefix=True)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"constrained-{stamp}.json"
    path.write_text(json.dumps(report, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
