"""Profile this device: microbenchmarks, real model measurements, fitted models, energy."""

from __future__ import annotations

import datetime as _dt
import math
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

from .. import __version__
from ..progress import Progress
from ..bundle import Bundle
from ..devices import EnergyMeter, detect_devices
from ..devices.cpu import default_threads
from ..devices.state import StateReader, state_changes
from ..runners.llama_cpp import gpu_offload_supported
from ..runners.registry import open_runner
from ..formats import costs_from_file
from .microbench import run_microbenchmarks
from .priors import load_prior
from .profile import DeviceProfile, VariantProfile
from .roofline import error_stats, fit_decode, fit_prefill, repeat_spread_pct

#: progress(label, done, total) — done/total count measurement steps


@dataclass(frozen=True)
class ProfilePlan:
    """What to measure per variant."""

    prefill_lengths: Sequence[int]
    batches: Sequence[int]
    decode_steps: int
    reps: int
    held_out_prefill: Sequence[int] = ()  # indices into prefill_lengths kept out of the fit for error reporting

    def steps(self) -> int:
        return len(self.prefill_lengths) * self.reps * (1 + len(self.batches))


QUICK = ProfilePlan(prefill_lengths=(24, 64, 160, 384, 640, 1024), batches=tuple(range(1, 9)), decode_steps=5, reps=2,
                    held_out_prefill=(1, 4))
FULL = ProfilePlan(prefill_lengths=(16, 32, 64, 128, 256, 384, 512, 768, 1024, 1536), batches=tuple(range(1, 9)),
                   decode_steps=6, reps=3, held_out_prefill=(1, 4, 7))


@dataclass
class _Energy:
    joules: float = 0.0
    seconds: float = 0.0
    provenance: str = "estimated"
    source: str = ""


def _split_decode(samples: List[Dict[str, float]], plan: ProfilePlan):
    """Hold out every batch size at the held-out context lengths: what the planner asks of the
    model is new contexts at the batch sizes 1-8 that were all measured. (Holding out batch
    sizes instead overstates the error: step time is not monotone in the batch size for
    some quantizations, e.g. Q4_K at batch 4 and 8 is faster than at 3 and 7 here.)"""
    held_lengths = {plan.prefill_lengths[i] for i in plan.held_out_prefill}
    train = [s for s in samples if s["context_len"] not in held_lengths]
    held = [s for s in samples if s["context_len"] in held_lengths]
    return train, held


class _Meter:
    """Energy over a block of work from the device's best sensor (measured, or the TDP
    estimate labelled as such)."""

    def __init__(self, sensor: Any):
        self.sensor = sensor

    def measure(self, work: Callable[[], Any], into: _Energy) -> Any:
        start = time.perf_counter()
        with EnergyMeter(self.sensor, interval_s=0.05) as meter:
            result = work()
        into.seconds += time.perf_counter() - start
        into.joules += meter.result.energy_j
        into.provenance, into.source = self.sensor.provenance, self.sensor.name
        return result


def measure_variant(runner, plan: ProfilePlan, meter: _Meter, progress: Progress = None, label: str = "") -> Dict[str, Any]:
    """Prefill time against prompt length, then decode step time against batch size at that
    context (the cache left by the prefill is reused); returns samples and energy."""
    prefill: List[Dict[str, float]] = []
    decode: List[Dict[str, float]] = []
    e_prefill, e_decode = _Energy(), _Energy()
    done, total = 0, plan.steps()
    # warm-up, discarded: the first evaluations fault the memory-mapped weights in
    runner.measure_prefill_ms(min(64, max(plan.prefill_lengths)))
    runner.measure_decode_ms(8, max(plan.batches), 3)
    # Repeats are interleaved (every length once, then again): a slow spell of a shared
    # machine lasts longer than one length's measurements, and the median of interleaved
    # repeats drops it where back-to-back repeats would all share it.
    prefill_ms: Dict[int, List[float]] = {length: [] for length in plan.prefill_lengths}
    decode_ms: Dict[tuple, List[List[float]]] = {(length, b): [] for length in plan.prefill_lengths for b in plan.batches}
    for _ in range(plan.reps):
        for length in plan.prefill_lengths:
            # each repeat re-evaluates the prompt, then times decode steps on top of it
            prefill_ms[length].append(meter.measure(lambda: runner.measure_prefill_ms(length), e_prefill))
            done += 1
            if progress:
                progress(f"{label} prefill {length} tokens", done, total)
            for batch in plan.batches:
                steps = meter.measure(lambda: runner.measure_decode_ms(length, batch, plan.decode_steps + 1), e_decode)
                decode_ms[(length, batch)].append(steps[1:])  # the first step after a cache change pays one-off costs
                done += 1
                if progress:
                    progress(f"{label} decode ctx {length} x{batch}", done, total)
    for length in plan.prefill_lengths:
        prefill.append({"n_tokens": length, "ms": statistics.median(prefill_ms[length]), "raw_ms": prefill_ms[length]})
        for batch in plan.batches:
            steps = [ms for rep in decode_ms[(length, batch)] for ms in rep]
            decode.append({"context_len": length, "batch": batch, "ms": statistics.median(steps), "raw_ms": steps})
    prefill_tokens = sum(s["n_tokens"] * len(s["raw_ms"]) for s in prefill)
    decode_tokens = sum(s["batch"] * (plan.decode_steps + 1) * plan.reps for s in decode)
    energy = {
        "prefill_j_per_token": e_prefill.joules / prefill_tokens,
        "decode_j_per_token": e_decode.joules / decode_tokens,
        "avg_power_w": (e_prefill.joules + e_decode.joules) / max(1e-9, e_prefill.seconds + e_decode.seconds),
        "provenance": e_decode.provenance,
        "source": e_decode.source,
    }
    # the same measurement repeated: a prefill, or a repeat's mean decode step (None: one repeat)
    spreads = {"prefill": repeat_spread_pct(list(prefill_ms.values())),
               "decode": repeat_spread_pct([[statistics.mean(rep) for rep in reps] for reps in decode_ms.values()])}
    noise = {**{k: (v if math.isfinite(v) else None) for k, v in spreads.items()}, "reps": plan.reps}
    return {"prefill": prefill, "decode": decode, "energy": energy, "repeat_spread_pct": noise}


def fit_variant(name: str, sha256: str, quantization: str, costs, threads: int, measured: Dict[str, Any],
                plan: ProfilePlan, peak_flops: float, bw: float) -> VariantProfile:
    """Fit on a training split, report the held-out error, then refit on every sample."""
    prefill, decode = measured["prefill"], measured["decode"]
    held_p = [s for i, s in enumerate(prefill) if i in plan.held_out_prefill]
    train_p = [s for i, s in enumerate(prefill) if i not in plan.held_out_prefill]
    train_d, held_d = _split_decode(decode, plan)
    pf = fit_prefill(train_p, costs, peak_flops, bw)
    df = fit_decode(train_d, costs, peak_flops, bw)
    fit_error = {
        "prefill_held_out": error_stats([s["ms"] for s in held_p],
                                        [pf.predict_ms(costs, peak_flops, bw, s["n_tokens"]) for s in held_p]),
        "decode_held_out": error_stats([s["ms"] for s in held_d],
                                       [df.predict_ms(costs, peak_flops, bw, s["context_len"], s["batch"]) for s in held_d]),
    }
    pf = fit_prefill(prefill, costs, peak_flops, bw)
    df = fit_decode(decode, costs, peak_flops, bw)
    fit_error["prefill_all"] = error_stats([s["ms"] for s in prefill],
                                           [pf.predict_ms(costs, peak_flops, bw, s["n_tokens"]) for s in prefill])
    fit_error["decode_all"] = error_stats([s["ms"] for s in decode],
                                          [df.predict_ms(costs, peak_flops, bw, s["context_len"], s["batch"]) for s in decode])
    if "repeat_spread_pct" in measured:
        fit_error["repeat_spread_pct"] = measured["repeat_spread_pct"]
    return VariantProfile(name=name, sha256=sha256, quantization=quantization, costs=costs, threads=threads,
                          prefill=pf, decode=df,
                          samples={"prefill": prefill, "decode": decode},
                          fit_error=fit_error, energy=measured["energy"])


def choose_device(devices: Sequence[Any], gpu_offload: bool) -> Any:
    """The device the model runs on: a GPU when llama.cpp offloads to one, else the board
    (Jetson, Raspberry Pi: their rails measure the whole module), else the CPU."""
    by_kind = {d.kind: d for d in devices}
    if gpu_offload and "nvidia-gpu" in by_kind:
        return by_kind["nvidia-gpu"]
    for kind in ("jetson", "raspberry-pi", "cpu"):
        if kind in by_kind:
            return by_kind[kind]
    return devices[0]


def profile_device(
    bundle: Optional[Bundle] = None,
    variants: Optional[Sequence[str]] = None,
    quick: bool = False,
    threads: Optional[int] = None,
    tdp_w: Optional[float] = None,
    prior: Optional[str] = None,
    progress: Progress = None,
    state_reader: Optional[StateReader] = None,
) -> DeviceProfile:
    """Measure this device (and every chosen variant of ``bundle``) into a DeviceProfile.

    The device state (clocks, temperatures, throttling, power mode) is read before and after
    (``state_reader``, default: this machine's); the profile records both and what changed."""
    plan = QUICK if quick else FULL
    threads = threads or default_threads()
    if tdp_w is None and prior is not None:
        tdp_w = load_prior(prior).tdp_w
    notes: List[str] = []
    device = choose_device(detect_devices(notes=notes), gpu_offload_supported())
    info = device.info()
    sensor = device.sensors(tdp_w=tdp_w)[0]
    meter = _Meter(sensor)
    reader = state_reader or StateReader()
    before = reader.read().to_dict()

    if progress:
        progress("microbenchmarks", 0, 1)
    micro = run_microbenchmarks(quick=quick)
    peak = micro["gemm_gflops"]["fp32"] * 1e9
    bw = micro["memory"]["read_gbs"] * 1e9
    profiled: Dict[str, VariantProfile] = {}
    if bundle is not None:
        chosen = [bundle.variant(n) for n in variants] if variants else bundle.variants
        for variant in chosen:
            costs = costs_from_file(bundle.artifact(variant), variant.format)
            # the shared context plus every sequence's new tokens live in one unified cache
            needed_ctx = max(plan.prefill_lengths) + max(plan.batches) * (plan.decode_steps + 1) + 16
            runner = open_runner(bundle, variant, n_ctx=needed_ctx, n_threads=threads)
            with runner:
                measured = measure_variant(runner, plan, meter, progress, label=variant.name)
            profiled[variant.name] = fit_variant(variant.name, variant.sha256, variant.quantization, costs, threads,
                                                 measured, plan, peak, bw)
    after = reader.read().to_dict()
    return DeviceProfile(
        device=info.to_dict(),
        peak_flops=peak,
        bandwidth_bytes_per_s=bw,
        variants=profiled,
        kind="measured",
        created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        created_by=f"edgert {__version__}",
        power_mode=info.details.get("power_mode"),
        prior=prior,
        sensor={"provenance": sensor.provenance, "source": sensor.name, "skipped": device.sensor_problems + notes},
        microbench={**micro, "plan": "quick" if quick else "full"},
        state={"start": before, "end": after, "changes": state_changes(before, after)},
    )
