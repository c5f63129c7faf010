"""What the ``edgert`` command shows: its tables, its summary lines and its progress bars.

The commands in ``main.py`` parse and call the library; the pieces here turn the library's
results into rich tables and text (every table keeps its headers and cells whole at 120
columns, the width pipes and CI logs get).
"""

from __future__ import annotations

import sys
from typing import Optional

from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeRemainingColumn)
from rich.table import Table

from edgert.strategies import Config

# pipes and CI logs get 120 columns instead of rich's default 80, so tables stay readable
con = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, highlight=False, soft_wrap=True, width=None if sys.stderr.isatty() else 120)


class ProgressBars:
    """The one progress display of long commands: a ``ProgressFn`` (``progress(label, done, total)``)
    that draws bars on stderr.

    A report continues the current bar while its total stays and ``done`` does not go back;
    otherwise it starts a new bar (the next file, variant or stage). A bar shows the latest
    label; ``unit`` "bytes" shows sizes, "steps" counts. The display appears at the first
    report and ``clear()`` takes it off the screen, so other output can be printed between
    steps (the next report brings it back).
    """

    def __init__(self, unit: str = "steps") -> None:
        self.unit = unit
        self._display: Optional[Progress] = None
        self._bar: Optional[list] = None  # [task id, total, done]

    def __call__(self, label: str, done: int, total: int) -> None:
        if self._display is None:
            amount = DownloadColumn() if self.unit == "bytes" else MofNCompleteColumn()
            self._display = Progress(TextColumn("{task.description:<40}", markup=False), BarColumn(), amount,
                                     TimeRemainingColumn(), console=err, transient=True)
            self._display.start()
            self._bar = None
        if self._bar is None or total != self._bar[1] or done < self._bar[2]:
            self._bar = [self._display.add_task(label, total=total), total, done]
        self._bar[2] = done
        self._display.update(self._bar[0], completed=done, total=total, description=label)

    def clear(self, unit: Optional[str] = None) -> None:
        """Take the bars off the screen; later bars count in ``unit`` if given."""
        if self._display is not None:
            self._display.stop()
            self._display = None
        self.unit = unit or self.unit

    def __enter__(self) -> "ProgressBars":
        return self

    def __exit__(self, *exc) -> None:
        self.clear()


# ------------------------------------------------------------------------- inspect
def variants_table(bundle, verified: Optional[bool]) -> Table:
    table = Table(title=f"{bundle.manifest.model_name}  ({bundle.root})", title_justify="left")
    for column in ("variant", "format", "quant", "params", "context", "size", "arch", "chat\ntemplate", "sha256"):
        # names fold onto a second line on a narrow screen; figures stay whole on one line
        table.add_column(column, justify="right" if column in ("params", "context", "size") else "left",
                         no_wrap=column not in ("variant", "arch"), overflow="fold")
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


# ----------------------------------------------------------------------------- run
def summary_line(result) -> str:
    g = result.generation
    if result.deadline_s is None:
        deadline = "no deadline"
    else:
        verdict = "met" if result.deadline_met else "missed"
        deadline = f"deadline {result.deadline_s * 1000:.0f} ms: {verdict}" + (" (cut)" if result.deadline_cut else "")
    head = f"[{result.variant}]"
    slowed = (result.device_state or {}).get("slowdowns")
    if slowed:
        deadline += f" · device slowed by {', '.join(slowed)}"
    constraint = result.constraint_record()
    if constraint is not None:
        verdict = "met" if constraint["satisfied"] else "NOT met" + (", fallback printed" if constraint["fallback_used"] else "")
        deadline += f" · constraint {constraint['kind']}: {verdict}"
    if result.config:
        head = f"[{Config.from_dict(result.config).label}]"
        samples = f" · {len(result.samples)} sample{'s' if len(result.samples) != 1 else ''}"
        energy = "" if result.energy_j is None else f" · {result.energy_j:.2f} J ({result.energy_provenance})"
        return (f"{head} {g.tokens_in} tokens in, {result.tokens_out} out{samples} · total {result.latency_ms:.0f} ms"
                f"{energy} · finish {result.finish_reason} · {deadline}")
    return (
        f"{head} {g.tokens_in} tokens in, {g.tokens_out} out · prefill {g.prefill_ms:.0f} ms · "
        f"decode {g.decode_tokens_per_s:.1f} tok/s · total {result.latency_ms:.0f} ms · "
        f"finish {result.finish_reason} · {deadline}"
    )


def answers_table(answers) -> Table:
    table = Table(title="answers under deadlines", title_justify="left")
    for column in ("Q", "limits", "planner's choice", "fits", "answer", "gold", "right", "latency", "met", "J"):
        # the configuration wraps between words; everything else stays whole on one line
        choice = column == "planner's choice"
        table.add_column(column, justify="right" if column in ("latency", "J") else "left", no_wrap=not choice,
                         overflow="fold", min_width=len(column) if choice else None)
    for a in answers:
        r = a.result
        table.add_row(f"Q{a.number}", f"{a.deadline_s:g} s" + (f", {a.power_w:g} W" if a.power_w else ""),
                      a.choice, "yes" if a.feasible else "no*", "-" if r.answer is None else str(r.answer), a.task.answer,
                      "yes" if a.correct else "no",
                      f"{r.latency_ms:.0f} ms", "yes" if r.deadline_met else "NO",
                      f"{r.energy_j:.1f}" if r.energy_j is not None else "?")
    return table


# ------------------------------------------------------------------------- convert
def gate_table(result) -> Table:
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


# ------------------------------------------------------------------------- profile
def profile_table(profile) -> Table:
    device = profile.device
    origin = (f"ESTIMATED from datasheet prior {profile.prior}" if profile.kind == "prior"
              else f"measured, power {profile.sensor.get('provenance')}")
    table = Table(title=f"{device.get('name', 'device')}  ·  peak {profile.peak_flops / 1e9:.0f} GFLOP/s  ·  "
                        f"bandwidth {profile.bandwidth_bytes_per_s / 1e9:.1f} GB/s  ·  {origin}",
                  title_justify="left")
    for column in ("variant", "prefill\ntok/s @512", "decode\ntok/s", "x8\ntok/s", "bound",
                   "held-out MAPE\npre / dec", "within\n±10%", "J/token\ndecode"):
        table.add_column(column, justify="left" if column in ("variant", "bound") else "right",
                         no_wrap=column != "variant", overflow="fold")
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
            f"{v.energy.get('decode_j_per_token', float('nan')):.3f} ({v.energy.get('provenance', '?')})",
        )
    return table


def accuracy_table(rows, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("variant", "strategy", "N", "think", "answer", "accuracy", "95% CI", "tasks", "samples", "tokens"):
        table.add_column(column, justify="left" if column in ("variant", "strategy") else "right",
                         no_wrap=column != "variant", overflow="fold")
    for r in sorted(rows, key=lambda r: (r["variant"], -r["accuracy"])):
        strategy = r["strategy"] + (f" T={r['temperature']:g}" if r.get("temperature") is not None else "")
        table.add_row(r["variant"], strategy, str(r["n"]), str(r["think_tokens"] or "-"), str(r["answer_tokens"]),
                      f"{r['accuracy']:.1%}", f"{r['ci_low']:.0%}-{r['ci_high']:.0%}", str(r["total"]),
                      f"{r['mean_samples']:.1f}", f"{r['mean_tokens']:.0f}")
    return table


def policy_table(rows, title: str, limit: int = 8) -> Table:
    """The best per-prompt policies of a task set (most accurate first)."""
    table = Table(title=title, title_justify="left")
    for column in ("first", "then", "escalate when", "accuracy", "95% CI", "escalated"):
        table.add_column(column, justify="right" if column in ("accuracy", "95% CI", "escalated") else "left",
                         overflow="fold")
    for r in rows[:limit]:
        rule = "always (anytime)" if r["signal"] == "always" else f"{r['signal']} < {r['threshold']:g}"
        table.add_row(Config.from_key(r["first"]).label, Config.from_key(r["then"]).label, rule, f"{r['accuracy']:.1%}", f"{r['ci_low']:.0%}-{r['ci_high']:.0%}",
                      f"{r['escalated_share']:.0%}")
    return table


#: the longest configuration label the plan table keeps on one line (the rest of it needs ~60 columns)
PLAN_LABEL_WIDTH = 56


def plan_table(result) -> Table:
    table = Table(title="Pareto frontier (fastest first; latency at the target probability)", title_justify="left")
    longest = max((len(c.label) for c in result.frontier), default=0)
    for column in ("configuration", "accuracy", "latency p95", "power", "energy", "fits"):
        # "fits" wraps between words, and so do labels too long to leave it room at 120 columns;
        # figures stay whole on one line
        wraps = column == "fits" or (column == "configuration" and longest > PLAN_LABEL_WIDTH)
        table.add_column(column, justify="left" if column in ("configuration", "fits") else "right",
                         no_wrap=not wraps, overflow="fold")
    for c in result.frontier:
        mark = "chosen" if c is result.choice else ("yes" if c.feasible else "; ".join(c.problems))
        table.add_row(c.label, f"{c.accuracy:.1%}", f"{c.latency_bound_ms:.0f} ms", f"{c.power_w:.1f} W",
                      f"{c.energy_j:.2f} J", mark)
    return table
