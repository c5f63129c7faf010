"""Calibrated roofline models of prefill and decode time, fitted to measurements.

Decode step with ``batch`` sequences at context ``C``::

    t = kappa(batch) * ( max(F_w / (eta_c * peak), W / (eta_m * bw)) + B*C*kv / (eta_a * bw) ) + o

where F_w are the weight FLOPs of the step, W the weight bytes, kv the cache bytes per
position, peak and bw the microbenchmarked GEMM throughput and memory bandwidth. The
efficiencies eta and the fixed overhead o are fitted (relative least squares); kappa(batch)
is a per-batch-size calibration of the kernels' shape effects (llama.cpp switches matmul
kernels with the batch size), the median ratio of measured to modelled time for that size.

Prefill of ``n`` tokens::

    t = max(F_lin / (eta_c * peak), bytes / (eta_m * bw)) + F_attn / (eta_a * peak) + o
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

from .costs import ModelCosts


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


@dataclass
class PrefillFit:
    """Fitted prefill model of one variant on one device."""

    eta_compute: float
    eta_memory: float
    eta_attention: float
    overhead_ms: float

    def predict_ms(self, costs: ModelCosts, peak_flops: float, bw_bytes: float, n_tokens: float) -> float:
        linear_flops = costs.prefill_linear_flops(n_tokens)
        attention_flops = costs.attn_flops_per_ctx_token * n_tokens * n_tokens / 2
        compute_s = linear_flops / (self.eta_compute * peak_flops)
        memory_s = costs.prefill_bytes(n_tokens) / (self.eta_memory * bw_bytes)
        return 1000 * (max(compute_s, memory_s) + attention_flops / (self.eta_attention * peak_flops)) + self.overhead_ms

    def to_dict(self) -> Dict[str, float]:
        return dict(eta_compute=self.eta_compute, eta_memory=self.eta_memory,
                    eta_attention=self.eta_attention, overhead_ms=self.overhead_ms)

    @classmethod
    def from_dict(cls, data: Dict[str, object]) -> "PrefillFit":
        return cls(**{k: float(data[k]) for k in ("eta_compute", "eta_memory", "eta_attention", "overhead_ms")})


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


def fit_prefill(samples: List[Dict[str, float]], costs: ModelCosts, peak_flops: float, bw_bytes: float) -> PrefillFit:
    """Fit from samples of {"n_tokens", "ms"}."""
    if len(samples) < 3:
        raise ValueError(f"need at least 3 prefill samples to fit, found {len(samples)}")
    n = np.array([s["n_tokens"] for s in samples], dtype=float)
    measured = np.array([s["ms"] for s in samples], dtype=float)

    def loss(x: np.ndarray) -> float:
        fit = PrefillFit(*_to_params(x))
        return _relative_loss(np.array([fit.predict_ms(costs, peak_flops, bw_bytes, k) for k in n]), measured)

    best = None
    for start in ([-1.0, -1.0, -2.0, 1.0], [0.0, -2.0, -3.0, 2.0], [-2.0, 0.0, -1.0, 0.0]):
        x = nelder_mead(loss, np.array(start))
        if best is None or loss(x) < loss(best):
            best = x
    return PrefillFit(*_to_params(best))
