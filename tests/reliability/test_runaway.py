"""A request that never stops on its own is cut at its deadline, and leaves no memory behind.

SmolLM2 on the real llama.cpp runner, a raw story prompt, no stop strings, EOS masked out
(``ignore_eos``) and max_tokens 100000: only the deadline can end it.
"""

from __future__ import annotations

import gc
import statistics
import time
from typing import Dict, Sequence

import pytest

from edgert.runners.types import Deadline, SamplingParams

pytestmark = pytest.mark.slow

RAMBLE_PROMPT = "Once upon a time, in a village by the sea, there lived an old fisherman who told long stories. One day he began:"
DEADLINES_S = [0.3 + 1.2 * i / 14 for i in range(15)]  # 0.3 .. 1.5 s
RSS_TOLERANCE_MB = 8


def rss_mb() -> float:
    import psutil

    gc.collect()
    return psutil.Process().memory_info().rss / 1e6


def runaway_runs(runner, deadlines_s: Sequence[float] = DEADLINES_S) -> Dict:
    """Run one never-ending request per deadline; overshoot = return time minus the deadline."""
    params = SamplingParams(max_tokens=100_000, temperature=0.0, ignore_eos=True)
    runner.generate(RAMBLE_PROMPT, SamplingParams(max_tokens=8, ignore_eos=True), chat=False)  # warm-up
    before_mb = rss_mb()
    overshoot_ms, steps_ms, reasons, tokens = [], [], [], []
    for seconds in deadlines_s:
        start = time.monotonic()
        result = runner.generate(RAMBLE_PROMPT, params, deadline=Deadline(seconds, start=start), chat=False)
        overshoot_ms.append((time.monotonic() - (start + seconds)) * 1000)
        steps_ms.extend(result.decode_step_ms)
        reasons.append(result.finish_reason)
        tokens.append(result.tokens_out)
    after_mb = rss_mb()
    ordered = sorted(overshoot_ms)
    return dict(
        deadlines_s=list(deadlines_s), overshoot_ms=overshoot_ms, finish_reasons=reasons, tokens_out=tokens,
        overshoot_p50_ms=statistics.median(overshoot_ms),
        overshoot_p99_ms=ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))],
        median_step_ms=statistics.median(steps_ms), rss_before_mb=before_mb, rss_after_mb=after_mb,
    )


@pytest.fixture(scope="module")
def runner(smollm2_path):
    """One thread: on a busy 2-core machine two llama.cpp threads wait on each other for whole
    scheduler slices, and a single step can then take seconds."""
    from edgert.runners.llama_cpp import LlamaCppRunner

    with LlamaCppRunner(smollm2_path, n_ctx=1024, n_threads=1) as loaded:
        yield loaded


def test_never_ending_requests_stop_at_their_deadline(runner):
    runs = runaway_runs(runner)
    assert runs["finish_reasons"] == ["deadline"] * len(DEADLINES_S), runs["finish_reasons"]
    assert min(runs["tokens_out"]) >= 5 and runs["tokens_out"][-1] > runs["tokens_out"][0]  # it was generating
    assert runs["overshoot_p99_ms"] <= runs["median_step_ms"] + 50, runs
    assert abs(runs["rss_after_mb"] - runs["rss_before_mb"]) <= RSS_TOLERANCE_MB, runs
