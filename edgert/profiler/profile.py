"""The device profile: a versioned JSON document with raw samples and fitted models.

The planner predicts latency and energy of every configuration from it, without touching
the device. A profile is either measured (``edgert profile``) or built from a datasheet
prior; every prediction made from a prior says so (``source == "prior"``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..errors import ProfileError
from ..fileio import atomic_write_bytes
from ..formats import ModelCosts
from .roofline import DecodeFit, PrefillFit

PROFILE_SCHEMA_VERSION = 1
#: repeats of one measurement differing by more than this (median, %) make single runs miss
#: the ±10% a prediction aims at (DeviceProfile.noise_warning)
NOISY_SPREAD_PCT = 10.0


@dataclass
class VariantProfile:
    """Measurements and fitted models of one bundle variant on the device."""

    name: str
    sha256: str
    quantization: str
    costs: ModelCosts
    threads: int
    prefill: PrefillFit
    decode: DecodeFit
    samples: Dict[str, List[Dict[str, float]]] = field(default_factory=dict)
    fit_error: Dict[str, Dict[str, float]] = field(default_factory=dict)
    energy: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "sha256": self.sha256,
            "quantization": self.quantization,
            "threads": self.threads,
            "costs": self.costs.to_dict(),
            "fit": {"prefill": self.prefill.to_dict(), "decode": self.decode.to_dict()},
            "fit_error": self.fit_error,
            "energy": self.energy,
            "samples": self.samples,
        }

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "VariantProfile":
        return cls(
            name=data["name"],
            sha256=data["sha256"],
            quantization=data.get("quantization", "unknown"),
            costs=ModelCosts(**data["costs"]),
            threads=int(data["threads"]),
            prefill=PrefillFit.from_dict(data["fit"]["prefill"]),
            decode=DecodeFit.from_dict(data["fit"]["decode"]),
            samples=data.get("samples", {}),
            fit_error=data.get("fit_error", {}),
            energy=data.get("energy", {}),
        )


@dataclass
class DeviceProfile:
    device: Dict[str, Any]
    peak_flops: float
    bandwidth_bytes_per_s: float
    variants: Dict[str, VariantProfile]
    kind: str = "measured"  # or "prior"
    created_at: str = ""
    created_by: str = ""
    power_mode: Optional[str] = None
    prior: Optional[str] = None
    sensor: Dict[str, Any] = field(default_factory=dict)
    microbench: Dict[str, Any] = field(default_factory=dict)
    #: the device state before and after measuring (``devices.state``) and what changed between
    state: Dict[str, Any] = field(default_factory=dict)
    schema_version: int = PROFILE_SCHEMA_VERSION

    # -------------------------------------------------------------- predictions
    @property
    def provenance(self) -> str:
        """How far to trust predictions: measured here, or estimated from a datasheet."""
        return f"estimated (datasheet prior {self.prior})" if self.kind == "prior" else "measured"

    def variant(self, name: str) -> VariantProfile:
        if name not in self.variants:
            raise ProfileError(f"the profile has no measurements of variant {name!r}; it has: {', '.join(self.variants) or 'none'}")
        return self.variants[name]

    def predict_prefill_ms(self, variant: str, n_tokens: int) -> float:
        v = self.variant(variant)
        return v.prefill.predict_ms(v.costs, self.peak_flops, self.bandwidth_bytes_per_s, n_tokens)

    def predict_decode_step_ms(self, variant: str, context_len: int, batch: int = 1) -> float:
        v = self.variant(variant)
        return v.decode.predict_ms(v.costs, self.peak_flops, self.bandwidth_bytes_per_s, context_len, batch)

    def predict_generation_ms(self, variant: str, prompt_tokens: int, output_tokens: int, batch: int = 1) -> float:
        """Prefill plus output_tokens decode steps; step time is linear in context, so the
        mean step is the step at the middle context."""
        mid_context = prompt_tokens + output_tokens / 2
        return self.predict_prefill_ms(variant, prompt_tokens) + output_tokens * self.predict_decode_step_ms(
            variant, mid_context, batch
        )

    def predict_energy_j(self, variant: str, prompt_tokens: int, output_tokens: int, batch: int = 1) -> float:
        e = self.variant(variant).energy
        return e.get("prefill_j_per_token", 0.0) * prompt_tokens + e.get("decode_j_per_token", 0.0) * output_tokens * batch

    def noise_warning(self) -> Optional[str]:
        """One line when repeats of one measurement (``fit_error.repeat_spread_pct``) differ by
        more than NOISY_SPREAD_PCT for some variant, else None."""
        for name, v in self.variants.items():
            spread = v.fit_error.get("repeat_spread_pct") or {}
            known = {k: spread[k] for k in ("prefill", "decode")
                     if isinstance(spread.get(k), (int, float)) and math.isfinite(spread[k])}
            if known and max(known.values()) > NOISY_SPREAD_PCT:
                fewer = v.threads - 1
                advice = (f"stop other programs, or profile and run with {fewer} thread{'s' if fewer > 1 else ''} "
                          f"(--threads {fewer}; slower, but it leaves a core to the rest)") if fewer else "stop other programs"
                figures = " / ".join(f"{value:.0f}% ({kind})" for kind, value in known.items())
                return (f"timing noise: {name} at {v.threads} threads: repeats of one measurement differ by a "
                        f"median of {figures}, so single runs will miss predictions by as much; usually other "
                        f"work shares these cores: {advice}")
        return None

    def state_warning(self) -> Optional[str]:
        """One line when the device's state changed while it was profiled (a power mode, a
        governor, throttling): its measurements then mix two regimes. None otherwise."""
        changes = self.state.get("changes") or []
        if not changes:
            return None
        return ("device state changed during profiling (" + "; ".join(changes) + "): the fits mix both states; "
                "profile again once the device is steady (cool, fixed power mode)")

    # --------------------------------------------------------------------- I/O
    def to_dict(self) -> Dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "kind": self.kind,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "device": self.device,
            "power_mode": self.power_mode,
            "prior": self.prior,
            "sensor": self.sensor,
            "microbench": self.microbench,
            "state": self.state,
            "peak_flops": self.peak_flops,
            "bandwidth_bytes_per_s": self.bandwidth_bytes_per_s,
            "variants": {name: v.to_dict() for name, v in self.variants.items()},
        }

    def save(self, path: Path) -> None:
        atomic_write_bytes(Path(path), (json.dumps(self.to_dict(), indent=1) + "\n").encode())

    @classmethod
    def from_dict(cls, data: Dict[str, Any], source: str = "profile") -> "DeviceProfile":
        version = data.get("schema_version")
        if version != PROFILE_SCHEMA_VERSION:
            raise ProfileError(f"{source}: schema_version {version!r} is not supported (expected {PROFILE_SCHEMA_VERSION})")
        try:
            return cls(
                device=data["device"],
                peak_flops=float(data["peak_flops"]),
                bandwidth_bytes_per_s=float(data["bandwidth_bytes_per_s"]),
                variants={k: VariantProfile.from_dict(v) for k, v in data["variants"].items()},
                kind=data.get("kind", "measured"),
                created_at=data.get("created_at", ""),
                created_by=data.get("created_by", ""),
                power_mode=data.get("power_mode"),
                prior=data.get("prior"),
                sensor=data.get("sensor", {}),
                microbench=data.get("microbench", {}),
                state=data.get("state", {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProfileError(f"{source}: malformed device profile ({type(exc).__name__}: {exc})") from None

    @classmethod
    def load(cls, path: Path) -> "DeviceProfile":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ProfileError(f"device profile not found: {path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ProfileError(f"{path}: not a JSON device profile ({exc})") from None
        if not isinstance(data, dict):
            raise ProfileError(f"{path}: expected a JSON object")
        return cls.from_dict(data, str(path))

    def matches(self, bundle) -> bool:
        """Whether this profile measured exactly the bundle's variants (same names, same sha256):
        a profile of other or changed artifacts predicts nothing about these."""
        return {v.name: v.sha256 for v in bundle.variants} == {n: v.sha256 for n, v in self.variants.items()}
