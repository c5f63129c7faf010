"""Rerun the reliability evidence and write docs/reliability.md with the measured figures.

    .venv/bin/python scripts/reliability_report.py [--out docs/reliability.md] [--skip-gemma]

About a minute on a 2-core machine (up to 3 when it is busy). It reuses the test helpers in tests/reliability/:
the malformed-input corpus (corpus.py), the SIGKILL driver and bundle checks (test_crash.py),
the never-ending requests (test_runaway.py) and the llama.cpp RSS probe (test_memory.py).
Every figure in the document is measured in this run unless it says otherwise.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parent.parent
for folder in (ROOT / "tests" / "reliability", ROOT / "tests"):
    sys.path.insert(0, str(folder))

import importlib  # noqa: E402

import psutil  # noqa: E402

importlib.import_module("edgert")  # before corpus.py puts the repository first on sys.path


def reliability_fixtures():
    """tests/reliability/conftest.py, loaded under its own name (tests/conftest.py is "conftest" too)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("reliability_fixtures", ROOT / "tests" / "reliability" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{cpu}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
            f"Python {platform.python_version()}, load average at start {load}")


def commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


# ------------------------------------------------------------------------ malformed inputs
def malformed(work: Path) -> Dict:
    from corpus import build_corpus, check_case

    cases = build_corpus(work / "corpus")
    outcomes = [check_case(case) for case in cases]
    kinds: Dict[str, Dict] = {}
    for outcome in outcomes:
        entry = kinds.setdefault(outcome.kind, dict(tried=0, rejected=0, accepted=[], worst_ms=0.0, worst_mb=0.0,
                                                    worst_ms_case="", worst_mb_case="", errors=set()))
        entry["tried"] += 1
        entry["rejected"] += outcome.rejected
        if not outcome.rejected:
            entry["accepted"].append(f"{outcome.name} ({outcome.error_type or 'accepted'})")
        if outcome.seconds * 1000 >= entry["worst_ms"]:
            entry["worst_ms"], entry["worst_ms_case"] = outcome.seconds * 1000, outcome.name
        if outcome.extra_memory_mb >= entry["worst_mb"]:
            entry["worst_mb"], entry["worst_mb_case"] = outcome.extra_memory_mb, outcome.name
        if outcome.error_type:
            entry["errors"].add(outcome.error_type)
    return kinds


# --------------------------------------------------------------------------- crash safety
def crash(work: Path) -> Dict:
    import test_crash as tc
    from edgert.bundle import pack

    fixtures = reliability_fixtures()

    base = work / "base"
    base.mkdir(parents=True)
    pack([tc.synthetic_gguf(base / "base.gguf", "Base", 250_000)], base / "pristine", model_name="base")
    pristine = base / "pristine"
    files = [tc.synthetic_gguf(base / "a.gguf", "Alpha", 2_400_000), tc.synthetic_gguf(base / "b.gguf", "Beta", 2_400_000)]
    tokenizer = fixtures.build_small_tokenizer(work / "tokenizer")
    source = fixtures._converter_fixtures().make_tiny("llama", work / "tiny-llama", tokenizer,
                                                      vocab_size=len(fixtures.tokenizer_vocab(tokenizer)))
    commands = {
        "pack": (["pack", *map(str, files), "--out", "{bundle}", "--name", "alpha", "--name", "beta"], tc.PACK_MODULES),
        "convert": (["convert", str(source), "--to", "gguf", "--quant", "F16", "--out", "{bundle}", "--threads", "1"],
                    tc.CONVERT_MODULES),
    }
    before = tc.snapshot(pristine)
    result = {}
    for name, (argv, preload) in commands.items():
        start = time.monotonic()
        out = tc.forked_kills(argv, pristine, work / name, preload)
        after = tc.snapshot(work / name / "finished" / "bundle")
        row = dict(points=len(out["points"]), names=sorted({p.rsplit(":", 1)[0] for p in out["points"]}), killed=0,
                   loadable=0, old_state=0, new_state=0, temp_files=0, journaled_complete=0, partial=0, failures=[],
                   recovered_exactly=0)
        for point, bundle, status in zip(out["points"], map(Path, out["bundles"]), out["statuses"]):
            row["killed"] += status == -signal.SIGKILL
            files_now = tc.snapshot(bundle)
            row["temp_files"] += sum(tc.hidden(rel) and not Path(rel).name.startswith(tc.PENDING_PREFIX) for rel in files_now)
            journaled = tc.journaled_names(bundle)
            row["journaled_complete"] += sum(1 for rel in files_now if rel in journaled and files_now[rel] == after.get(rel))
            try:
                committed = tc.check_after_kill(bundle, point, before, after)
                row["loadable"] += 1
                row["new_state" if committed else "old_state"] += 1
                tc.check_recovered(bundle, point, before, after, committed)
                row["recovered_exactly"] += 1
            except AssertionError as exc:
                row["failures"].append(f"{point}: {str(exc).splitlines()[0]}")
                row["partial"] += "partial" in str(exc)
            except Exception as exc:  # Bundle.open / verify refused the killed bundle
                row["failures"].append(f"{point}: {type(exc).__name__}: {exc}")
        row["seconds"] = time.monotonic() - start
        result[name] = row
    return result


# ------------------------------------------------------------------------------ full disk
def full_disk(work: Path) -> Dict:
    import test_crash as tc
    from edgert import fileio
    from edgert.bundle import Bundle, pack
    from edgert.errors import DiskFullError

    work.mkdir(parents=True)
    pristine = work / "pristine"
    pack([tc.synthetic_gguf(work / "base.gguf", "Base", 250_000)], pristine, model_name="base")
    files = [tc.synthetic_gguf(work / "a.gguf", "Alpha", 2_400_000), tc.synthetic_gguf(work / "b.gguf", "Beta", 2_400_000)]
    rows = []
    scenarios = [("ENOSPC in write() half-way through the second artifact", False, files[0].stat().st_size + 5_000_000),
                 ("ENOSPC at flush/fsync (delayed allocation), second artifact", True, files[0].stat().st_size + 5_000_000),
                 ("ENOSPC writing the manifest (artifacts fitted)", False,
                  files[0].stat().st_size + files[1].stat().st_size + 100)]
    original = fileio._open_temp
    for index, (label, at_flush, room) in enumerate(scenarios):
        bundle = tc.hardlink_copy(pristine, work / f"case-{index}")
        before = tc.snapshot(bundle)
        disk = tc.Disk(room, at_flush)
        fileio._open_temp = disk.open_temp
        try:
            pack(files, bundle, names=["alpha", "beta"])
            error, message = "none", "(no error raised)"
        except DiskFullError as exc:
            error, message = type(exc).__name__, str(exc)
        finally:
            fileio._open_temp = original
        intact = tc.snapshot(bundle) == before
        try:
            Bundle.open(bundle).verify()
            loadable = True
        except Exception:
            loadable = False
        rows.append(dict(label=label, error=error, message=message.replace(str(work), "…"),
                         intact=intact and loadable, temp_left=not tc.no_temp_files(bundle)))
    return dict(rows=rows)


# -------------------------------------------------------------------------------- runaway
def runaway() -> Dict:
    from test_runaway import runaway_runs

    from edgert.models import packaged_model_path
    from edgert.runners.llama_cpp import LlamaCppRunner

    with LlamaCppRunner(packaged_model_path(), n_ctx=1024, n_threads=1) as runner:
        return runaway_runs(runner)


# ------------------------------------------------------------------------- memory estimate
def memory(skip_gemma: bool) -> List[Dict]:
    from test_memory import measure_llama_rss

    from edgert.formats import MB
    from edgert.memory import estimate_memory
    from edgert.models import packaged_model_path

    rows = []
    for name in ["smollm2-135m-instruct"] + ([] if skip_gemma else ["gemma-3-270m"]):
        path = packaged_model_path(name)
        estimate = estimate_memory(path, n_ctx=2048)
        measured = measure_llama_rss(path, n_ctx=2048, n_prompt=600)
        buffers = measured["buffers_mib"]
        rows.append(dict(
            name=name, file_mb=path.stat().st_size / MB,
            est_weights=estimate.weights_bytes / MB, est_kv=estimate.kv_cache_bytes / MB,
            est_compute=estimate.compute_bytes / MB, est_overhead=estimate.overhead_bytes / MB,
            est_total=estimate.total_bytes / MB,
            log_weights=(buffers.get("CPU_Mapped model", 0) + buffers.get("CPU_REPACK model", 0)) * 2**20 / MB,
            log_kv=buffers.get("CPU KV", 0) * 2**20 / MB, log_compute=buffers.get("CPU compute", 0) * 2**20 / MB,
            log_output=buffers.get("CPU  output", 0) * 2**20 / MB,
            rss_load=measured["load_mb"], rss_prompt=measured["after_prompt_mb"], tokens_in=measured["tokens_in"],
        ))
    return rows


# ---------------------------------------------------------------------------------- render
def render(info: Dict) -> str:
    lines = ["# Reliability evidence", "",
             f"Measured by `scripts/reliability_report.py` on {info['date']} at commit `{info['commit']}`, on "
             f"{info['machine']}. The machine is shared: timings are noisy, memory figures less so.", "",
             "Rerun (about a minute, up to 3 on a busy machine; `--skip-gemma` drops the Gemma 3 load):", "",
             "    .venv/bin/python scripts/reliability_report.py", "",
             "The same checks run as tests: `pytest tests/reliability/` (test_malformed, test_crash, test_memory, "
             "test_runaway).", ""]

    lines += ["## Summary", "", "| area | what was tried | result |", "|---|---|---|"]
    kinds = info["malformed"]
    tried = sum(k["tried"] for k in kinds.values())
    rejected = sum(k["rejected"] for k in kinds.values())
    lines.append(f"| malformed inputs | {tried} files over {len(kinds)} kinds | {rejected} refused with an EdgertError, "
                 f"{tried - rejected} not |")
    crash_rows = info["crash"]
    points = sum(r["points"] for r in crash_rows.values())
    partial = sum(r["partial"] for r in crash_rows.values())
    failures = sum(len(r["failures"]) for r in crash_rows.values())
    lines.append(f"| SIGKILL during pack / convert | {points} kill points | {partial} partial files at final paths, "
                 f"{failures} failed checks |")
    disk_ok = sum(r["error"] == "DiskFullError" and r["intact"] and not r["temp_left"] for r in info["disk"]["rows"])
    lines.append(f"| full disk | {len(info['disk']['rows'])} ENOSPC scenarios | {disk_ok} gave DiskFullError with the "
                 f"bundle intact and no temp file |")
    run = info["runaway"]
    lines.append(f"| runaway generation | {len(run['deadlines_s'])} never-ending requests, deadlines "
                 f"{min(run['deadlines_s']):.1f}–{max(run['deadlines_s']):.1f} s | overshoot p50 "
                 f"{run['overshoot_p50_ms']:+.1f} ms, p99 {run['overshoot_p99_ms']:+.1f} ms (median step "
                 f"{run['median_step_ms']:.1f} ms); RSS {run['rss_before_mb']:.1f} → {run['rss_after_mb']:.1f} MB |")
    for row in info["memory"]:
        lines.append(f"| memory estimate, {row['name']} n_ctx 2048 | estimate vs RSS growth | {row['est_total']:.0f} MB vs "
                     f"{row['rss_prompt']:.0f} MB ({100 * (row['est_total'] / row['rss_prompt'] - 1):+.0f}%) |")
    lines.append("")

    lines += ["## Malformed inputs", "",
              "Built from the format specs by `tests/reliability/corpus.py` and fed to the loader of each kind "
              "(see its docstring). Worst time and worst extra memory (max of the tracemalloc peak and the growth of "
              "peak RSS) over the cases of the kind.", "",
              "| kind | tried | refused | not refused | worst time | worst extra memory | error types |",
              "|---|---|---|---|---|---|---|"]
    for kind, k in kinds.items():
        lines.append(f"| {kind} | {k['tried']} | {k['rejected']} | {', '.join(k['accepted']) or '–'} | "
                     f"{k['worst_ms']:.1f} ms ({k['worst_ms_case']}) | {k['worst_mb']:.1f} MB ({k['worst_mb_case']}) | "
                     f"{', '.join(sorted(k['errors']))} |")
    lines.append("")

    lines += ["## SIGKILL during `edgert pack` and `edgert convert`", "",
              "Crash points are named calls of `edgert.fileio.crash_point` at every step of an atomic write "
              "(temp created, written, fsynced, renamed, directory fsynced), at every 4 MB chunk of a copy, and at "
              "the stage boundaries of pack (validated, journaled, copied, before manifest, committed) and convert "
              "(staged, pre-flight passed, converted, gated, journaled, moved, before manifest, committed). A first "
              "run records every point it passes (`EDGERT_CRASH_TRACE`); then the command runs once per point with "
              "`EDGERT_CRASH_POINT=name:N` and SIGKILLs itself there (deterministic, no sleeps). pack copies two "
              "9.6 MB GGUF files into an existing bundle; convert turns a tiny random Llama into F16 GGUF, gate "
              "included. Each run starts from a hard-linked copy of the same bundle.", "",
              "After every kill: `Bundle.open` + `verify` pass, every old file is byte-identical, and any file at a "
              "final path is either named by the manifest or a complete artifact named by the pending journal; then "
              "the cleanup every pack/convert runs first (`recover_interrupted`) must leave the bundle exactly as "
              "before (kill before the manifest rename) or exactly as after (kill after it).", "",
              "| command | kill points | distinct names | killed | loadable | old state | new state | temp files seen | "
              "complete journaled files seen | partial files at final paths | exact after recovery | time |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in crash_rows.items():
        lines.append(f"| {name} | {r['points']} | {len(r['names'])} | {r['killed']} | {r['loadable']} | {r['old_state']} | "
                     f"{r['new_state']} | {r['temp_files']} | {r['journaled_complete']} | {r['partial']} | "
                     f"{r['recovered_exactly']} | {r['seconds']:.0f} s |")
    lines.append("")
    for name, r in crash_rows.items():
        lines.append(f"- {name} points: {', '.join(r['names'])}")
        for failure in r["failures"]:
            lines.append(f"  - FAILED {failure}")
    lines.append("")

    lines += ["## Full disk", "",
              "ENOSPC is simulated by replacing the file object of every atomic write (`edgert.fileio._open_temp`) with "
              "one drawing on a fixed budget of bytes; pack then adds two 9.6 MB files to an existing bundle. (A real "
              "disk that is too small is refused before writing: pack and each copy compare the bytes to write with "
              "the free space first.)", "",
              "| scenario | error | bundle intact and loadable | temp file left | message |", "|---|---|---|---|---|"]
    for row in info["disk"]["rows"]:
        lines.append(f"| {row['label']} | {row['error']} | {'yes' if row['intact'] else 'NO'} | "
                     f"{'YES' if row['temp_left'] else 'no'} | `{row['message']}` |")
    lines.append("")

    lines += ["## Runaway generation", "",
              "SmolLM2-135M-Instruct Q4_1 on the llama.cpp runner (1 thread, n_ctx 1024), a raw story prompt, "
              "`SamplingParams(max_tokens=100000, temperature=0, ignore_eos=True)`: only the deadline can end these "
              "requests. Overshoot is the return time minus the deadline instant (negative: returned early, because "
              "a step predicted to overrun is not started).", "",
              f"- finish reasons: {', '.join(sorted(set(run['finish_reasons'])))}; tokens per request "
              f"{min(run['tokens_out'])}–{max(run['tokens_out'])}",
              f"- overshoot p50 {run['overshoot_p50_ms']:+.1f} ms, p99 {run['overshoot_p99_ms']:+.1f} ms, worst "
              f"{max(run['overshoot_ms']):+.1f} ms; median decode step {run['median_step_ms']:.1f} ms "
              f"(bound checked by the test: p99 ≤ median step + 50 ms)",
              f"- process RSS before {run['rss_before_mb']:.1f} MB, after {run['rss_after_mb']:.1f} MB "
              f"({run['rss_after_mb'] - run['rss_before_mb']:+.1f} MB)",
              "- per request (deadline s → overshoot ms): " + ", ".join(
                  f"{d:.2f}→{o:+.0f}" for d, o in zip(run["deadlines_s"], run["overshoot_ms"])), ""]

    lines += ["## Memory estimate vs measured", "",
              "`edgert.memory.estimate_memory(path, n_ctx=2048)` against a fresh process that loads the model with "
              "edgert's llama.cpp runner (n_ctx 2048, 8 sequences, unified KV cache, 1 thread) and evaluates a "
              f"{info['memory'][0]['tokens_in'] if info['memory'] else 0}-token prompt plus 8 tokens. llama.cpp's "
              "logged buffer sizes are shown beside the estimate's parts; its compute buffer is a worst-case "
              "reservation (logits for a whole 512-token micro-batch) that is mostly never touched, so it is not "
              "resident.", "",
              "| model | file | weights est / llama.cpp | KV est / llama.cpp | compute est / reserved | overhead est | "
              "total est | RSS growth after load | after prompt | est / after prompt |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in info["memory"]:
        lines.append(f"| {r['name']} | {r['file_mb']:.0f} MB | {r['est_weights']:.0f} / {r['log_weights']:.0f} MB | "
                     f"{r['est_kv']:.1f} / {r['log_kv']:.1f} MB | {r['est_compute']:.0f} / {r['log_compute'] + r['log_output']:.0f} MB | "
                     f"{r['est_overhead']:.0f} MB | {r['est_total']:.0f} MB | {r['rss_load']:.0f} MB | "
                     f"{r['rss_prompt']:.0f} MB | {r['est_total'] / r['rss_prompt']:.2f} |")
    lines += ["", "The compute and overhead constants of the estimate were fitted to these two models on this machine; "
              "other architectures (and ONNX/TensorRT, estimated from file sizes) are not validated.", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "reliability.md")
    parser.add_argument("--skip-gemma", action="store_true")
    args = parser.parse_args()
    info = dict(date=dt.date.today().isoformat(), commit=commit(), machine=machine())
    work = Path(tempfile.mkdtemp(prefix="edgert-reliability-"))
    try:
        steps = [("malformed", lambda: malformed(work / "malformed")), ("crash", lambda: crash(work / "crash")),
                 ("disk", lambda: full_disk(work / "disk")), ("runaway", runaway),
                 ("memory", lambda: memory(args.skip_gemma))]
        for key, step in steps:
            start = time.monotonic()
            info[key] = step()
            sys.stderr.write(f"{key}: {time.monotonic() - start:.0f} s\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    from edgert.fileio import atomic_write_bytes

    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out, render(info).encode())
    sys.stderr.write(f"wrote {args.out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
