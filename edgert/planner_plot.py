"""Pareto plot of a plan: expected accuracy against the latency bound, per configuration."""

from __future__ import annotations

from pathlib import Path

from .profiler.plot import require_matplotlib


def pareto_png(plan, path: Path, title: str = "") -> Path:
    """Every candidate (grey: violates the power or energy limit), the frontier, the deadline
    and the chosen configuration."""
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(8.5, 5.5))
    variants = sorted({c.config.variant for c in plan.candidates})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, variant in enumerate(variants):
        ok = [c for c in plan.candidates if c.config.variant == variant and not _limited(c)]
        limited = [c for c in plan.candidates if c.config.variant == variant and _limited(c)]
        ax.scatter([c.latency_bound_ms / 1000 for c in ok], [c.accuracy for c in ok], s=28,
                   color=colors[i % len(colors)], label=variant, alpha=0.85)
        ax.scatter([c.latency_bound_ms / 1000 for c in limited], [c.accuracy for c in limited], s=18,
                   facecolors="none", edgecolors="grey", alpha=0.6)
    front = plan.frontier
    ax.step([c.latency_bound_ms / 1000 for c in front], [c.accuracy for c in front], where="post", color="k", lw=1,
            label="Pareto frontier")
    ax.axvline(plan.limits.deadline_s, color="tab:red", ls="--", lw=1, label=f"deadline {plan.limits.deadline_s:g} s")
    choice = plan.choice
    ax.scatter([choice.latency_bound_ms / 1000], [choice.accuracy], marker="*", s=260, color="gold", edgecolors="k",
               zorder=5, label=f"chosen: {choice.label}")
    ax.set_xscale("log")
    ax.set_xlabel(f"predicted latency at p{plan.limits.target * 100:.0f} (s, log scale)")
    ax.set_ylabel("expected accuracy (calibration)")
    limits = [f"deadline {plan.limits.deadline_s:g} s"]
    if plan.limits.power_w is not None:
        limits.append(f"power {plan.limits.power_w:g} W (hollow: above it)")
    if plan.limits.energy_j is not None:
        limits.append(f"energy {plan.limits.energy_j:g} J")
    ax.set_title(title or "edgert plan: " + ", ".join(limits), fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _limited(candidate) -> bool:
    return any(not p.startswith("needs ") for p in candidate.problems)
