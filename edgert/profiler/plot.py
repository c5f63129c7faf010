"""Roofline plot: measured points over the fitted roofs, and measured against predicted.

Also the one place that imports matplotlib (optional: the ``plot`` extra), for this plot and
the planner's Pareto plot.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import BackendUnavailableError
from .profile import DeviceProfile

PLOT_INSTALL = "pip install 'edgert[plot]'"


def require_matplotlib():
    """``matplotlib.pyplot`` drawing to files (Agg); a one-line error naming the extra if missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BackendUnavailableError(f"plots need matplotlib, which is not installed: {PLOT_INSTALL}") from None
    return plt


def plot_available() -> bool:
    """Whether plots can be drawn (matplotlib imports)."""
    try:
        require_matplotlib()
    except BackendUnavailableError:
        return False
    return True


def roofline_png(profile: DeviceProfile, path: Path) -> Path:
    plt = require_matplotlib()
    fig, (roof_ax, parity_ax) = plt.subplots(1, 2, figsize=(13, 5.5))
    peak, bw = profile.peak_flops, profile.bandwidth_bytes_per_s
    intensities = np.logspace(-1, 3, 200)
    roof_ax.loglog(intensities, np.minimum(peak, bw * intensities) / 1e9, "k--", lw=1, label="microbenchmark roof (GEMM fp32, read BW)")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    all_measured, all_predicted = [], []
    for i, (name, v) in enumerate(profile.variants.items()):
        color = colors[i % len(colors)]
        # decode (matrix-vector) and prefill (matrix-matrix) reach different fractions of the peak
        for fit, style, kind in ((v.decode, "-", "decode"), (v.prefill, ":", "prefill")):
            roof = np.minimum(fit.eta_compute * peak, fit.eta_memory * bw * intensities)
            roof_ax.loglog(intensities, roof / 1e9, style, color=color, lw=1.5, label=f"{name}: fitted {kind} roof")
        for kind, marker in (("decode", "o"), ("prefill", "^")):
            xs, ys, measured, predicted = [], [], [], []
            for s in v.samples.get(kind, []):
                if kind == "decode":
                    flops = v.costs.decode_flops(s["context_len"], s["batch"])
                    nbytes = v.costs.decode_bytes(s["context_len"], s["batch"])
                    pred = profile.predict_decode_step_ms(name, s["context_len"], s["batch"])
                else:
                    flops = v.costs.prefill_flops(s["n_tokens"])
                    nbytes = v.costs.prefill_bytes(s["n_tokens"])
                    pred = profile.predict_prefill_ms(name, s["n_tokens"])
                xs.append(flops / nbytes)
                ys.append(flops / (s["ms"] / 1000) / 1e9)
                measured.append(s["ms"])
                predicted.append(pred)
            roof_ax.scatter(xs, ys, marker=marker, color=color, s=18, alpha=0.8, label=f"{name}: {kind} measured")
            parity_ax.scatter(measured, predicted, marker=marker, color=color, s=18, alpha=0.8, label=f"{name}: {kind}")
            all_measured += measured
            all_predicted += predicted
    roof_ax.set_xlabel("arithmetic intensity (FLOP / byte)")
    roof_ax.set_ylabel("achieved GFLOP/s")
    roof_ax.set_title(f"roofline: {profile.device.get('name', 'device')}")
    roof_ax.legend(fontsize=7, loc="lower right")
    roof_ax.grid(True, which="both", alpha=0.3)
    if all_measured:
        lo, hi = min(all_measured + all_predicted) * 0.8, max(all_measured + all_predicted) * 1.25
        line = np.array([lo, hi])
        parity_ax.loglog(line, line, "k-", lw=1)
        parity_ax.fill_between(line, line * 0.9, line * 1.1, color="grey", alpha=0.2, label="±10%")
    parity_ax.set_xlabel("measured ms")
    parity_ax.set_ylabel("predicted ms")
    parity_ax.set_title("fitted model against measurements")
    parity_ax.legend(fontsize=7)
    parity_ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
