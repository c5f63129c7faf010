"""A device profile from a datasheet prior alone, to plan for a device you do not have.

Peak throughput and bandwidth come from the prior (each with its source); the
efficiencies below are assumptions, not measurements, so every prediction from such a
profile is labelled estimated. A measured profile of the real device replaces them.
"""

from __future__ import annotations

import datetime as _dt
from typing import Dict, Optional, Sequence

from .. import __version__
from ..bundle import Bundle
from ..formats import costs_from_file
from .priors import DevicePrior, load_prior
from .profile import DeviceProfile, VariantProfile
from .roofline import DecodeFit, PrefillFit

# Assumed efficiencies relative to datasheet peaks (estimates, not measurements): llama.cpp
# decode typically reaches about half of datasheet DRAM bandwidth on GPUs and boards, and
# prompt processing a third of tensor/SIMD peak; overheads are per step / per prompt.
ASSUMED = {
    "gpu": dict(decode=DecodeFit(0.25, 0.5, 0.3, 1.0), prefill=PrefillFit(0.35, 0.5, 0.3, 5.0)),
    "cpu": dict(decode=DecodeFit(0.3, 0.5, 0.2, 3.0), prefill=PrefillFit(0.35, 0.5, 0.2, 20.0)),
}
ENGINE_PRECISION = {"jetson": "fp16", "gpu": "fp16", "cpu": "fp32", "sbc": "fp32"}


def profile_from_prior(prior: str | DevicePrior, bundle: Optional[Bundle] = None,
                       variants: Optional[Sequence[str]] = None, power_mode: Optional[str] = None) -> DeviceProfile:
    prior = prior if isinstance(prior, DevicePrior) else load_prior(prior)
    mode = prior.power_mode(power_mode)
    precision = ENGINE_PRECISION.get(prior.device_class, "fp32")
    peak = prior.peak_flops(precision, mode.name) if precision in prior.peak_tflops else prior.peak_flops("fp32", mode.name)
    bw = prior.mode_bandwidth_bytes_per_s(mode.name)
    assumed = ASSUMED["gpu" if prior.device_class in ("gpu", "jetson") else "cpu"]
    profiled: Dict[str, VariantProfile] = {}
    if bundle is not None:
        for variant in [bundle.variant(n) for n in variants] if variants else bundle.variants:
            costs = costs_from_file(bundle.artifact(variant), variant.format)
            decode, prefill = assumed["decode"], assumed["prefill"]
            step_s = decode.predict_ms(costs, peak, bw, 256, 1) / 1000
            prefill_s = prefill.predict_ms(costs, peak, bw, 512) / 1000 / 512
            profiled[variant.name] = VariantProfile(
                name=variant.name, sha256=variant.sha256, quantization=variant.quantization, costs=costs, threads=0,
                prefill=prefill, decode=decode,
                fit_error={"note": "no measurements: efficiencies assumed (estimated)"},
                energy={"prefill_j_per_token": mode.tdp_w * prefill_s, "decode_j_per_token": mode.tdp_w * step_s,
                        "avg_power_w": mode.tdp_w, "provenance": "estimated",
                        "source": f"datasheet TDP {mode.tdp_w:g} W at full load ({prior.id})"},
            )
    return DeviceProfile(
        device={"kind": prior.device_class, "name": prior.name, "vendor": prior.vendor,
                "details": {"memory_bytes": int(prior.memory_size_gb * 1e9), "compute_capability": prior.compute_capability,
                            "tdp_w": mode.tdp_w}},
        peak_flops=peak,
        bandwidth_bytes_per_s=bw,
        variants=profiled,
        kind="prior",
        created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        created_by=f"edgert {__version__}",
        power_mode=mode.name,
        prior=prior.id,
        sensor={"provenance": "estimated", "source": f"datasheet prior {prior.id}"},
        microbench={"engine": f"datasheet {precision} peak and DRAM bandwidth ({prior.id})"},
    )
