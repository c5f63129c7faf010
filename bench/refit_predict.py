"""Refit a recorded predict run's profile with the current fitting code and score it again.

bench/predict.py records the quick profile it used (raw prefill and decode samples) and the
held-out measurements. This script refits the profile's samples with the code as it is now
(``fit_prefill`` / ``fit_decode``, exactly as the profiler fits a variant on every sample),
predicts every held-out configuration the way predict.py does, and reports MAPE and the
share within +-10% per variant: a model change can be compared before/after without
measuring again (no model is loaded, nothing is timed).

Also printed, for scale:
- the scores of the predictions recorded in the run;
- "floor": the same prefill model fitted to the held-out measurements themselves, scored
  in-sample: the scatter of the held-out set about any curve of this form, which no fit of
  the profile can beat;
- "offset": the median of measured / predicted prefill, how much slower (>1) or faster the
  held-out session ran than the profile's fit says (time-correlated noise, or a bias);
- the noise of one held-out value from the spread of its repeats (they run back to back,
  so it misses slower drifts).

Usage: python bench/refit_predict.py [STAMP ...] [--all] [--results bench/results] [--residuals] [--json]
  STAMP: e.g. 20261124-023826 (default: the newest run that has its profile recorded)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgert.formats import ModelCosts  # noqa: E402
from edgert.profiler.roofline import error_stats, fit_decode, fit_prefill  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def recorded_stamps(results: Path) -> List[str]:
    """Stamps of predict runs whose profile was recorded too, oldest first."""
    stamps = []
    for path in sorted(results.glob("predict-*.json")):
        stamp = path.stem[len("predict-"):]
        if not stamp.startswith("profile") and (results / f"predict-profile-{stamp}.json").exists():
            stamps.append(stamp)
    return stamps


def _repeat_sigma_pct(rows: List[Dict[str, Any]], key: str) -> float:
    """Noise of one held-out value (the median of its repeats) estimated from the spread of
    its repeats: the standard deviation of log(r1/r2) over configurations, / sqrt(2) for one
    measurement, / sqrt(repeats) for their median (a mean, for two)."""
    ratios = [math.log(r[key][0] / r[key][1]) for r in rows if len(r.get(key, [])) > 1]
    if len(ratios) < 2:
        return float("nan")
    repeats = len(rows[0][key])
    return 100 * statistics.pstdev(ratios) / math.sqrt(2) / math.sqrt(repeats)


def score_run(results: Path, stamp: str) -> Dict[str, Any]:
    run = json.loads((results / f"predict-{stamp}.json").read_text())
    profile = json.loads((results / f"predict-profile-{stamp}.json").read_text())
    peak, bw = profile["peak_flops"], profile["bandwidth_bytes_per_s"]
    out: Dict[str, Any] = {"stamp": stamp, "variants": {}}
    pooled = {k: ([], []) for k in ("prefill", "prefill_floor", "decode_step", "recorded_prefill", "recorded_decode_step")}
    for name, variant in profile["variants"].items():
        costs = ModelCosts(**variant["costs"])
        prefill_fit = fit_prefill(variant["samples"]["prefill"], costs, peak, bw)
        decode_fit = fit_decode(variant["samples"]["decode"], costs, peak, bw)
        rows = [r for r in run["configs"] if r["variant"] == name]
        measured_p = [r["prefill_ms"] for r in rows]
        measured_d = [r["decode_step_ms"] for r in rows]
        predicted_p = [prefill_fit.predict_ms(costs, peak, bw, r["prompt"]) for r in rows]
        # as predict.py: the mean step is the step at the middle context
        predicted_d = [decode_fit.predict_ms(costs, peak, bw, r["prompt"] + r["output"] / 2, r["batch"]) for r in rows]
        own = [{"n_tokens": r["prompt"], "ms": r["prefill_ms"], "raw_ms": r.get("prefill_repeats_ms")} for r in rows]
        own_fit = fit_prefill(own, costs, peak, bw)
        floor_p = [own_fit.predict_ms(costs, peak, bw, r["prompt"]) for r in rows]
        scores = {
            "prefill": error_stats(measured_p, predicted_p),
            "prefill_floor": error_stats(measured_p, floor_p),
            "prefill_offset": statistics.median(m / p for m, p in zip(measured_p, predicted_p)),
            "decode_step": error_stats(measured_d, predicted_d),
            "recorded_prefill": error_stats(measured_p, [r["predicted_prefill_ms"] for r in rows]),
            "recorded_decode_step": error_stats(measured_d, [r["predicted_decode_step_ms"] for r in rows]),
            "prefill_repeat_sigma_pct": _repeat_sigma_pct(rows, "prefill_repeats_ms"),
            "decode_repeat_sigma_pct": _repeat_sigma_pct(rows, "step_mean_repeats_ms"),
        }
        out["variants"][name] = {
            "scores": scores,
            "prefill_fit": prefill_fit.to_dict(),
            "residuals": [
                {"prompt": r["prompt"], "measured_ms": m, "predicted_ms": p, "error_pct": 100 * (p / m - 1),
                 "repeats_ms": r.get("prefill_repeats_ms", [])}
                for r, m, p in sorted(zip(rows, measured_p, predicted_p), key=lambda t: t[0]["prompt"])
            ],
        }
        for key, (m, p) in (("prefill", (measured_p, predicted_p)), ("decode_step", (measured_d, predicted_d)),
                            ("prefill_floor", (measured_p, floor_p)),
                            ("recorded_prefill", (measured_p, [r["predicted_prefill_ms"] for r in rows])),
                            ("recorded_decode_step", (measured_d, [r["predicted_decode_step_ms"] for r in rows]))):
            pooled[key][0].extend(m)
            pooled[key][1].extend(p)
    out["all"] = {k: error_stats(*v) for k, v in pooled.items()}
    return out


def _cell(stats: Dict[str, float]) -> str:
    return f"{stats['mape_pct']:5.1f}% {stats['within_10pct']:4.0%}"


def render(result: Dict[str, Any], residuals: bool) -> str:
    lines = [f"## {result['stamp']}  (MAPE, share within +-10%)", "",
             "| variant | prefill refit | prefill recorded | prefill floor | offset | decode refit | decode recorded "
             "| repeat noise prefill / decode |",
             "|---|---|---|---|---|---|---|---|"]
    for name, v in list(result["variants"].items()) + [("all", {"scores": result["all"]})]:
        s = v["scores"]
        noise = ""
        if not math.isnan(s.get("prefill_repeat_sigma_pct", math.nan)):
            noise = f"{s['prefill_repeat_sigma_pct']:.1f}% / {s['decode_repeat_sigma_pct']:.1f}%"
        elif "prefill_repeat_sigma_pct" in s:
            noise = "not recorded"
        floor = _cell(s["prefill_floor"]) if "prefill_floor" in s else ""
        offset = f"x{s['prefill_offset']:.3f}" if "prefill_offset" in s else ""
        lines.append(f"| {name} | {_cell(s['prefill'])} | {_cell(s['recorded_prefill'])} | {floor} | {offset} | "
                     f"{_cell(s['decode_step'])} | {_cell(s['recorded_decode_step'])} | {noise} |")
    if residuals:
        for name, v in result["variants"].items():
            lines += ["", f"{name} prefill fit {json.dumps({k: round(x, 4) for k, x in v['prefill_fit'].items()})}"]
            lines += [f"  prompt {r['prompt']:5d}: measured {r['measured_ms']:7.0f} ms "
                      f"(repeats {', '.join(f'{x:.0f}' for x in r['repeats_ms'])}), "
                      f"predicted {r['predicted_ms']:7.0f} ms, error {r['error_pct']:+6.1f}%"
                      for r in v["residuals"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stamps", nargs="*", help="predict run stamps (default: the newest with a recorded profile)")
    parser.add_argument("--all", action="store_true", help="every recorded run, and the scores pooled over them")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--residuals", action="store_true", help="list each held-out prefill error")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    available = recorded_stamps(args.results)
    stamps = available if args.all else (args.stamps or available[-1:])
    if not stamps:
        parser.error(f"no predict run with a recorded profile in {args.results}")
    results = [score_run(args.results, s) for s in stamps]
    if args.json:
        print(json.dumps(results, indent=1))
        return
    print("\n\n".join(render(r, args.residuals) for r in results))
    if len(results) > 1:
        print(f"\n## runs {', '.join(stamps)} pooled (each variant's held-out configurations of every run)\n")
        print("| variant | prefill refit | prefill recorded | decode refit | decode recorded |\n|---|---|---|---|---|")
        names = list(results[0]["variants"])
        for name in names + ["all"]:
            cells = []
            for key in ("prefill", "recorded_prefill", "decode_step", "recorded_decode_step"):
                # pool by recombining per-run stats (weighted by n)
                parts = [r["all"][key] if name == "all" else r["variants"][name]["scores"][key] for r in results]
                n = sum(p["n"] for p in parts)
                cells.append({"n": n, "mape_pct": sum(p["mape_pct"] * p["n"] for p in parts) / n,
                              "within_10pct": sum(p["within_10pct"] * p["n"] for p in parts) / n})
            print(f"| {name} | " + " | ".join(_cell(c) for c in cells) + " |")


if __name__ == "__main__":
    main()
