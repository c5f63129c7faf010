"""Microbenchmarks of the host engine: achieved GEMM throughput and memory bandwidth.

NumPy's BLAS stands in for the CPU's matrix engine (the figure llama.cpp's kernels are
measured against); GPU engines are measured by their runners in device_tests/.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, List, Optional

import numpy as np

#: progress(label) — called before each measurement
StepCallback = Optional[Callable[[str], None]]


def _median_time_s(fn: Callable[[], object], reps: int) -> float:
    fn()  # warm-up: page faults, thread pool start
    times: List[float] = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gemm_gflops(n: int = 1024, dtype: str = "float32", reps: int = 5) -> float:
    """Achieved GFLOP/s of an n x n x n matrix product (2 n^3 FLOPs)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    out = np.empty((n, n), dtype=dtype)
    seconds = _median_time_s(lambda: np.matmul(a, b, out=out), reps)
    return 2 * n**3 / seconds / 1e9


def memory_bandwidth_gbs(size_mb: int = 256, reps: int = 5) -> Dict[str, float]:
    """Read bandwidth (sum over an array) and copy bandwidth (bytes read + written), GB/s."""
    n = size_mb * 1024 * 1024 // 8
    src = np.ones(n, dtype=np.float64)
    dst = np.empty_like(src)
    read_s = _median_time_s(lambda: src.sum(), reps)
    copy_s = _median_time_s(lambda: np.copyto(dst, src), reps)
    return {"read_gbs": src.nbytes / read_s / 1e9, "copy_gbs": 2 * src.nbytes / copy_s / 1e9}


def run_microbenchmarks(quick: bool = False, step: StepCallback = None) -> Dict[str, object]:
    """GEMM per precision NumPy runs natively on this CPU, and memory bandwidth."""
    reps = 3 if quick else 7
    results: Dict[str, object] = {"engine": "cpu-numpy-blas"}
    gemm: Dict[str, float] = {}
    for dtype in ("float32", "float64"):
        if step:
            step(f"GEMM {dtype}")
        gemm[{"float32": "fp32", "float64": "fp64"}[dtype]] = gemm_gflops(1024 if quick else 2048, dtype, reps)
    results["gemm_gflops"] = gemm
    if step:
        step("memory bandwidth")
    results["memory"] = memory_bandwidth_gbs(128 if quick else 512, reps)
    return results
