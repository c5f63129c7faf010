"""What the runtime returns for one request: the answer and its telemetry.

Its own module so that the server, the CLI and applications can read and render results
without importing the runtime's machinery.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from .runners.types import GenerationResult


@dataclass
class RuntimeResult:
    """An answer with its telemetry."""

    text: str
    variant: str
    finish_reason: str
    latency_ms: float
    load_ms: float
    generation: GenerationResult
    deadline_s: Optional[float] = None
    answer: Optional[str] = None
    config: Optional[Dict[str, Any]] = None
    plan: Optional[Dict[str, Any]] = None
    samples: List[GenerationResult] = field(default_factory=list)
    votes: Dict[str, int] = field(default_factory=dict)
    forced: bool = False
    energy_j: Optional[float] = None
    energy_provenance: str = "unknown"
    threads: Optional[int] = None
    power_setting: Optional[str] = None  # the device knob's position (Jetson mode, GPU limit)
    warnings: List[str] = field(default_factory=list)
    #: a per-prompt policy's stages: {config, answer, signals, latency_ms, decision} each
    stages: List[Dict[str, Any]] = field(default_factory=list)
    #: with a constraint: whether ``text`` is a complete, valid answer; whether the request's
    #: fallback was returned instead of the generated text (None / False without a constraint)
    constraint_satisfied: Optional[bool] = None
    fallback_used: bool = False
    #: what the constraint was (its kind and name), for telemetry
    constraint: Optional[str] = None
    #: independent answers of a plain run (``Request.completions`` > 1); the first is ``generation``
    completions: List[GenerationResult] = field(default_factory=list)
    #: the device's state when the request started (``edgert.devices.state.DeviceState.to_dict``:
    #: clocks, temperatures, throttling, power mode; None fields say why in ``unreadable``)
    device_state: Optional[Dict[str, Any]] = None

    @property
    def escalated(self) -> bool:
        """Whether a policy ran its second stage for this request."""
        return len(self.stages) > 1

    @property
    def deadline_cut(self) -> bool:
        return self.finish_reason == "deadline"

    @property
    def deadline_met(self) -> Optional[bool]:
        """Whether the answer arrived by the deadline (None when there was no deadline)."""
        if self.deadline_s is None:
            return None
        return self.latency_ms <= self.deadline_s * 1000

    @property
    def tokens_out(self) -> int:
        return sum(s.tokens_out for s in self.samples) if self.samples else self.generation.tokens_out

    def trace_record(self) -> Dict[str, object]:
        """The decision record a runtime's JSONL trace keeps for this request."""
        return {
            "variant": self.variant, "config": self.config, "plan": self.plan, "answer": self.answer,
            "finish_reason": self.finish_reason, "deadline_s": self.deadline_s, "deadline_met": self.deadline_met,
            "latency_ms": round(self.latency_ms, 2), "load_ms": round(self.load_ms, 2),
            "tokens_in": self.generation.tokens_in, "tokens_out": self.tokens_out, "samples": len(self.samples),
            "threads": self.threads, "energy_j": None if self.energy_j is None else round(self.energy_j, 4),
            "energy_provenance": self.energy_provenance, "stages": self.stages,
            "constraint": self.constraint_record(),
            "device_state": None if self.device_state is None else self.device_state.get("key"),
        }

    def constraint_record(self) -> Optional[Dict[str, object]]:
        """What became of the request's constraint (None without one): whether it was met,
        whether the fallback was returned, the mask time per token and the tokens appended to
        close the structure without the model."""
        if self.constraint is None:
            return None
        g = self.generation
        masks = sorted(g.mask_ms)
        return {
            "kind": self.constraint, "satisfied": bool(self.constraint_satisfied), "fallback_used": self.fallback_used,
            "closed_tokens": g.closed_tokens,
            "mask_ms_median": round(masks[len(masks) // 2], 4) if masks else None,
            "mask_ms_max": round(masks[-1], 4) if masks else None,
        }

    def to_dict(self) -> Dict[str, object]:
        g = self.generation
        return {
            "text": self.text,
            "answer": self.answer,
            "variant": self.variant,
            "config": self.config,
            "finish_reason": self.finish_reason,
            "deadline_s": self.deadline_s,
            "deadline_met": self.deadline_met,
            "deadline_cut": self.deadline_cut,
            "latency_ms": round(self.latency_ms, 3),
            "load_ms": round(self.load_ms, 3),
            "threads": self.threads,
            "power_setting": self.power_setting,
            "warnings": self.warnings,
            "tokens_in": g.tokens_in,
            "tokens_out": self.tokens_out,
            "samples": len(self.samples) or 1,
            "votes": self.votes,
            "forced": self.forced,
            "energy_j": None if self.energy_j is None else round(self.energy_j, 4),
            "energy_provenance": self.energy_provenance,
            "prefill_ms": round(g.prefill_ms, 3),
            "decode_ms": round(g.decode_ms, 3),
            "decode_tokens_per_s": round(g.decode_tokens_per_s, 2),
            "decode_step_ms": [round(x, 3) for x in g.decode_step_ms],
            "plan": self.plan,
            "stages": self.stages,
            "constraint": self.constraint_record(),
            "device_state": self.device_state,
        }
