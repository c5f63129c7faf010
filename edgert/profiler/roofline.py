"""Calibrated roofline models of prefill and decode time, fitted to measurements.

Decode step with ``batch`` sequences at context ``C``::

    t = kappa(batch) * ( max(F_w / (eta_c * peak), W / (eta_m * bw)) + B*C*kv / (eta_a * bw) ) + o

where F_w are the weight FLOPs of the step, W the weight bytes, kv the cache bytes per
position, peak and bw the microbenchmarked GEMM throughput and memory bandwidth. The
efficiencies eta and the fixed overhead o are fitted (relative least squares); kappa(batch)
is a per-batch-size calibration of the kernels' shape effects (llama.cpp switches matmul
kernels with the batch size), the median ratio of measured to modelled time for that size.

Prefill of ``n`` tokens, evaluated in micro-batches of ``ubatch`` tokens (chunk ``j`` of
``u_j`` tokens after ``s_j`` already cached)::

    t = sum_j [ max(F_lin(u_j) / (eta_c * peak), (W + u_j*kv) / (eta_m * bw))
                + a * u_j * (s_j + u_j / 2) / (eta_a * peak) + o_chunk ] + o

with ``a`` the attention FLOPs per (token x context position); see PrefillFit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

from ..formats import ModelCosts


def nelder_mead(f: Callable[[np.ndarray], float], x0: np.ndarray, iters: int = 2000, step: float = 0.5) -> np.ndarray:
    """Minimise f from x0 (small, dependency-free Nelder-Mead; enough for 3-5 parameters)."""
    n = len(x0)
    simplex = [np.asarray(x0, dtype=float)]
    for i in range(n):
        x = simplex[0].copy()
        x[i] += step
        simplex.append(x)
    values = [f(x) for x in simplex]
    for _ in range(iters):
        order = np.argsort(values)
        simplex = [simplex[i] for i in order]
        values = [values[i] for i in order]
        if abs(values[-1] - values[0]) < 1e-12:
            break
        centroid = np.mean(simplex[:-1], axis=0)
        reflected = centroid + (centroid - simplex[-1])
        fr = f(reflected)
        if fr < values[0]:
            expanded = centroid + 2 * (centroid - simplex[-1])
            fe = f(expanded)
            simplex[-1], values[-1] = (expanded, fe) if fe < fr else (reflected, fr)
        elif fr < values[-2]:
            simplex[-1], values[-1] = reflected, fr
        else:
            contracted = centroid + 0.5 * (simplex[-1] - centroid)
            fc = f(contracted)
            if fc < values[-1]:
                simplex[-1], values[-1] = contracted, fc
            else:
                best = simplex[0]
                simplex = [best] + [best + 0.5 * (x - best) for x in simplex[1:]]
                values = [values[0]] + [f(x) for x in simplex[1:]]
    return simplex[int(np.argmin(values))]


def error_stats(measured: Sequence[float], predicted: Sequence[float]) -> Dict[str, float]:
    """MAPE (%) and the share of predictions within +-10%."""
    m = np.asarray(measured, dtype=float)
    p = np.asarray(predicted, dtype=float)
    if m.size == 0:
        return {"n": 0, "mape_pct": float("nan"), "within_10pct": float("nan")}
    rel = np.abs(p - m) / m
    return {"n": int(m.size), "mape_pct": float(100 * rel.mean()), "within_10pct": float((rel <= 0.10).mean())}


def repeat_spread_pct(raw: Sequence[Sequence[float]], quantile: float = 0.5) -> float:
    """How much one measurement varies when repeated: the median (or another quantile) over
    measurements of (max - min) / min of its repeats, in percent (NaN when none was
    repeated). No model can predict single measurements closer than this; on a machine
    whose cores are shared with other work it is the floor of the prediction error."""
    spreads = [(max(r) - min(r)) / min(r) * 100 for r in raw if len(r) > 1 and min(r) > 0]
    return float(np.quantile(spreads, quantile)) if spreads else float("nan")


@dataclass
class DecodeFit:
    """Fitted decode-step model of one variant on one device."""

    eta_compute: float
    eta_memory: float
    eta_attention: float
    overhead_ms: float
    kappa: Dict[int, float] = field(default_factory=dict)

    def base_ms(self, costs: ModelCosts, peak_flops: float, bw_bytes: float, context_len: float, batch: float) -> float:
        compute_s = batch * 2 * costs.matmul_params / (self.eta_compute * peak_flops)
        memory_s = costs.weight_bytes_per_step / (self.eta_memory * bw_bytes)
        attention_s = batch * context_len * costs.kv_bytes_per_token / (self.eta_attention * bw_bytes)
        return 1000 * (max(compute_s, memory_s) + attention_s)

    def kappa_for(self, batch: float) -> float:
        if not self.kappa:
            return 1.0
        keys = sorted(self.kappa)
        return float(np.interp(batch, keys, [self.kappa[k] for k in keys]))

    def predict_ms(self, costs: ModelCosts, peak_flops: float, bw_bytes: float, context_len: float, batch: float) -> float:
        return self.kappa_for(batch) * self.base_ms(costs, peak_flops, bw_bytes, context_len, batch) + self.overhead_ms

    def bound(self, costs: ModelCosts, peak_flops: float, bw_bytes: float, batch: float) -> str:
        compute_s = batch * 2 * costs.matmul_params / (self.eta_compute * peak_flops)
        memory_s = costs.weight_bytes_per_step / (self.eta_memory * bw_bytes)
        return "compute" if compute_s >= memory_s else "memory"

    def to_dict(self) -> Dict[str, object]:
        return {
            "eta_compute": self.eta_compute,
            "eta_memory": self.eta_memory,
            "eta_attention": self.eta_attention,
            "overhead_ms": self.overhead_ms,
            "kappa": {str(k): v for k, v in sorted(self.kappa.items())},
        }

    @classmethod
    def from_dict(cls, data: Dict[str, object]) -> "DecodeFit":
        return cls(
            eta_compute=float(data["eta_compute"]),
            eta_memory=float(data["eta_memory"]),
            eta_attention=float(data["eta_attention"]),
            overhead_ms=float(data["overhead_ms"]),
            kappa={int(k): float(v) for k, v in dict(data.get("kappa", {})).items()},
        )


#: tokens per micro-batch the llama.cpp runner evaluates a prompt in: its n_batch = n_ubatch,
#: edgert.runners.llama_cpp.N_BATCH (not imported: the planner's import stays light)
DEFAULT_UBATCH = 512


def prefill_chunks(n_tokens: float, ubatch: int = DEFAULT_UBATCH) -> List[Tuple[float, float]]:
    """(start, size) of each micro-batch a prompt of ``n_tokens`` is evaluated in: a 640-token
    prompt is a 512-token pass, then a 128-token pass over the 512 positions already cached."""
    if n_tokens <= 0:
        return []
    return [(float(start), float(min(ubatch, n_tokens - start))) for start in range(0, math.ceil(n_tokens), ubatch)]


@dataclass
class PrefillFit:
    """Fitted prefill model of one variant on one device.

    A prompt is evaluated in micro-batches of ``ubatch`` tokens (llama.cpp's n_ubatch). Each
    is a pass over the weights (compute- or weight-read-bound), its tokens attend causally
    to the context before them and to each other, and it pays a fixed cost (one graph
    evaluation: build, scheduling, thread hand-offs)::

        t = sum over chunks (start s, size u) of
              max(F_lin(u) / (eta_c * peak), (W + u * kv) / (eta_m * bw))
              + a * u * (s + u / 2) / (eta_a * peak) + o_chunk
            + o

    ``overhead_ms`` (o) is per prompt; fit_prefill puts the fixed cost in the per-chunk term
    and leaves o at 0 (datasheet priors set o). Profiles saved before the per-chunk term
    existed read with ``chunk_overhead_ms`` 0 and ubatch 512 and predict as before wherever
    every micro-batch is compute-bound (the old form took one max over the whole prompt)."""

    eta_compute: float
    eta_memory: float
    eta_attention: float
    overhead_ms: float
    chunk_overhead_ms: float = 0.0
    ubatch: int = DEFAULT_UBATCH

    def chunk_ms(self, costs: ModelCosts, peak_flops: float, bw_bytes: float, start: float, size: float,
                 last: bool = True) -> float:
        """One micro-batch of ``size`` tokens after ``start`` cached ones; the vocabulary
        projection is computed in the last one only (only the last position needs logits)."""
        compute_s = costs.prefill_linear_flops(size, logits=last) / (self.eta_compute * peak_flops)
        memory_s = costs.prefill_bytes(size, self.ubatch) / (self.eta_memory * bw_bytes)  # one weight pass
        attention_s = costs.attn_flops_per_ctx_token * size * (start + size / 2) / (self.eta_attention * peak_flops)
        return 1000 * (max(compute_s, memory_s) + attention_s) + self.chunk_overhead_ms

    def predict_ms(self, costs: ModelCosts, peak_flops: float, bw_bytes: float, n_tokens: float) -> float:
        chunks = prefill_chunks(n_tokens, self.ubatch)
        return sum(self.chunk_ms(costs, peak_flops, bw_bytes, start, size, last=i == len(chunks) - 1)
                   for i, (start, size) in enumerate(chunks)) + self.overhead_ms

    def to_dict(self) -> Dict[str, float]:
        return dict(eta_compute=self.eta_compute, eta_memory=self.eta_memory,
                    eta_attention=self.eta_attention, overhead_ms=self.overhead_ms,
                    chunk_overhead_ms=self.chunk_overhead_ms, ubatch=self.ubatch)

    @classmethod
    def from_dict(cls, data: Dict[str, object]) -> "PrefillFit":
        return cls(**{k: float(data[k]) for k in ("eta_compute", "eta_memory", "eta_attention", "overhead_ms")},
                   chunk_overhead_ms=float(data.get("chunk_overhead_ms", 0.0)),
                   ubatch=int(data.get("ubatch", DEFAULT_UBATCH)))


ETA_MAX = 4.0


def _relative_loss(predicted: np.ndarray, measured: np.ndarray) -> float:
    return float(np.mean(np.log(predicted / measured) ** 2))


def _to_params(x: np.ndarray) -> Tuple[float, ...]:
    """Unconstrained -> efficiencies in (0, 4) and overhead >= 0.

    Efficiencies are relative to fp32 BLAS and measured read bandwidth; quantized int8
    dot-product kernels can beat fp32 GEMM, hence the bound above 1."""
    etas = tuple(ETA_MAX / (1 + math.exp(-v)) for v in x[:-1])
    return etas + (math.exp(x[-1]),)


def fit_decode(samples: List[Dict[str, float]], costs: ModelCosts, peak_flops: float, bw_bytes: float) -> DecodeFit:
    """Fit from samples of {"context_len", "batch", "ms"}."""
    if len(samples) < 4:
        raise ValueError(f"need at least 4 decode samples to fit, found {len(samples)}")
    ctx = np.array([s["context_len"] for s in samples], dtype=float)
    batch = np.array([s["batch"] for s in samples], dtype=float)
    measured = np.array([s["ms"] for s in samples], dtype=float)

    def loss(x: np.ndarray) -> float:
        eta_c, eta_m, eta_a, overhead = _to_params(x)
        fit = DecodeFit(eta_c, eta_m, eta_a, overhead)
        predicted = np.array([fit.predict_ms(costs, peak_flops, bw_bytes, c, b) for c, b in zip(ctx, batch)])
        return _relative_loss(predicted, measured)

    best = None
    for start in ([-1.0, -1.0, -2.0, 0.0], [0.0, -2.0, -3.0, 1.0], [-2.0, 0.0, -1.0, -1.0]):
        x = nelder_mead(loss, np.array(start))
        if best is None or loss(x) < loss(best):
            best = x
    fit = DecodeFit(*_to_params(best))
    ratios: Dict[int, List[float]] = {}
    for c, b, m in zip(ctx, batch, measured):
        base = fit.base_ms(costs, peak_flops, bw_bytes, c, b)
        ratios.setdefault(int(b), []).append((m - fit.overhead_ms) / base)
    fit.kappa = {b: float(np.median(r)) for b, r in ratios.items()}
    return fit


#: Huber threshold of the prefill fit's loss on log(predicted / measured): about one
#: repeat's noise on a shared 2-core machine; residuals beyond it count linearly, so one
#: disturbed repeat does not bend the curve (see bench/refit_predict.py)
PREFILL_HUBER_DELTA = 0.05


def _huber(residuals: np.ndarray, delta: float) -> float:
    a = np.abs(residuals)
    return float(np.mean(np.where(a <= delta, a ** 2, 2 * delta * a - delta ** 2)))


def _prefill_points(samples: List[Dict[str, float]]) -> Tuple[np.ndarray, np.ndarray]:
    """(n_tokens, ms) of every repeat measured (``raw_ms``), else of each sample's ``ms``."""
    n, ms = [], []
    for s in samples:
        for value in s.get("raw_ms") or [s["ms"]]:
            n.append(float(s["n_tokens"]))
            ms.append(float(value))
    return np.array(n), np.array(ms)


def fit_prefill(samples: List[Dict[str, float]], costs: ModelCosts, peak_flops: float, bw_bytes: float,
                eta_memory: float = 1.0, ubatch: int = DEFAULT_UBATCH) -> PrefillFit:
    """Fit from samples of {"n_tokens", "ms", optionally "raw_ms": every repeat}.

    Fitted: eta_compute, eta_attention and the per-chunk overhead. Prompts of tens of tokens
    or more are compute-bound (a 24-token pass does ~24x the FLOPs per weight byte of a
    decode step), so the weight-read term only matters for prompts or tail chunks of a few
    tokens and the samples cannot identify its efficiency; it is held at ``eta_memory``
    (default 1: the microbenchmarked read bandwidth; a decode fit's value can be passed).
    A free eta_memory let noisy fits turn the weight read into an unphysical floor
    (weights at 2 GB/s). Every repeat is fitted, with a Huber loss on the log error."""
    if len(samples) < 3:
        raise ValueError(f"need at least 3 prefill samples to fit, found {len(samples)}")
    n, measured = _prefill_points(samples)

    def make(x: np.ndarray) -> PrefillFit:
        eta_c, eta_a = (ETA_MAX / (1 + math.exp(-v)) for v in x[:2])
        return PrefillFit(eta_c, eta_memory, eta_a, 0.0, chunk_overhead_ms=math.exp(x[2]), ubatch=ubatch)

    def loss(x: np.ndarray) -> float:
        fit = make(x)
        predicted = np.array([fit.predict_ms(costs, peak_flops, bw_bytes, k) for k in n])
        return _huber(np.log(predicted / measured), PREFILL_HUBER_DELTA)

    best = None
    for start in ([-1.0, -2.0, 1.0], [0.0, -3.0, 2.0], [-2.0, -1.0, 0.0]):
        x = nelder_mead(loss, np.array(start))
        if best is None or loss(x) < loss(best):
            best = x
    return make(best)
