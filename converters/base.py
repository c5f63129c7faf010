"""Shared pieces of every conversion: options, artifacts, the converter base and registry.

A converter turns a ``source.Source`` (a Hugging Face model directory, possibly imported
from a GGUF file) into one ``Artifact`` per quantization, written inside a staging
directory; the pipeline (``converters.pipeline``) runs the quality gate on each and only
then hands the passing ones to the bundle writer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, ClassVar, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Type

from edgert.errors import UsageError
from edgert.progress import Progress

from .quality import GateResult, RunnerLogits, Thresholds, evaluate_lm, judge
from .source import Source

#: what each gate threshold bounds; the ones named min_* are shares in [0, 1]
GATE_LIMITS = {"max_mean_kld": "mean KL divergence", "min_top1": "top-1 agreement",
               "max_ppl_increase_pct": "perplexity increase (%)", "max_abs_diff": "max absolute output difference",
               "min_cosine": "output cosine similarity"}
LM_GATE_NAMES: Tuple[str, ...] = tuple(f.name for f in fields(Thresholds))


def tool_versions(packages: Iterable[str]) -> Dict[str, str]:
    """Installed versions of ``packages`` (those not installed are left out)."""
    found = {}
    for name in packages:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def check_gate_values(thresholds: Mapping[str, float], allowed: Sequence[str], why: str = "") -> None:
    """Refuse ``--gate`` names outside ``allowed`` and values that are not finite and >= 0
    (min_* at most 1), in one line naming the valid names."""
    unknown = [name for name in thresholds if name not in allowed]
    if unknown:
        raise UsageError(f"--gate {', '.join(unknown)}: expected one of {', '.join(allowed)}{why}")
    for name, value in thresholds.items():
        top = 1.0 if name.startswith("min_") else math.inf
        if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= top):
            bound = "between 0 and 1" if top == 1.0 else "a finite number >= 0"
            raise UsageError(f"--gate {name}={value}: expected {bound} ({GATE_LIMITS.get(name, name)})")


@dataclass
class ConvertOptions:
    quantizations: List[str]
    work_dir: Path  # staging directory on the bundle's filesystem
    block_size: int = 32  # 4-bit weight-only block size (ONNX MatMulNBits)
    imatrix: Optional[Path] = None  # llama.cpp importance matrix for GGUF quantization
    calibration: Optional[Path] = None  # static int8 calibration data (non-LLM ONNX)
    thresholds: Dict[str, float] = field(default_factory=dict)  # gate overrides (max_mean_kld, min_top1, ...)
    threads: Optional[int] = None
    progress: Progress = None
    # TensorRT optimization profiles and builder
    max_batch: int = 8
    context_length: Optional[int] = None
    workspace_bytes: Optional[int] = None
    hardware_compatibility: Optional[str] = None


@dataclass
class Artifact:
    """One converted model, staged and not yet in the bundle."""

    format: str  # "gguf" | "onnx" | "tensorrt"
    quantization: str  # e.g. "Q4_K_M", "F16", "int8-dynamic", "int4-block32"
    path: Path  # main file (inside the staging directory)
    files: List[Path] = field(default_factory=list)  # further files it needs (ONNX external data, tokenizer)
    metadata: Dict[str, Any] = field(default_factory=dict)  # tool versions, options, engine compatibility


class Converter:
    """Base of the per-format converters; subclasses register themselves by ``target``."""

    target: ClassVar[str] = ""
    registry: ClassVar[Dict[str, Type["Converter"]]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.target:
            Converter.registry[cls.target] = cls

    def supported_quantizations(self) -> List[str]:
        raise NotImplementedError

    def quantization_label(self, quantization: str, block_size: int) -> str:
        """The name an artifact of ``quantization`` is recorded under (and its variant named by)."""
        return quantization

    def gate_thresholds(self, quantization: str) -> Thresholds:
        """The language-model gate limits of one quantization (from the converter's table)."""
        raise NotImplementedError

    def gate_names(self, source: Optional[Source] = None) -> Tuple[str, ...]:
        """The ``--gate`` names that apply (to ``source``, once known)."""
        return LM_GATE_NAMES

    def check_thresholds(self, thresholds: Mapping[str, float], source: Optional[Source] = None) -> None:
        check_gate_values(thresholds, self.gate_names(source))

    def supports(self, source: Source) -> Optional[str]:
        """None if the source can be converted, else the reason it cannot."""
        raise NotImplementedError

    def convert(self, source: Source, options: ConvertOptions) -> List[Artifact]:
        raise NotImplementedError

    def candidate(self, artifact: Artifact, threads: Optional[int] = None) -> RunnerLogits:
        """The artifact run by its edgert runner, as a ``quality.LogitsModel`` (language models)."""
        return RunnerLogits(artifact.format, artifact.path, n_threads=threads)

    def gate(self, source: Source, artifact: Artifact, reference, options: ConvertOptions) -> GateResult:
        """Judge one artifact against the source; the default compares next-token
        distributions (language models). Converters of other networks override this."""
        with self.candidate(artifact, options.threads) as candidate:
            metrics = evaluate_lm(reference, candidate, reference.windows())
        return judge(metrics, self.gate_thresholds(artifact.quantization).override(options.thresholds))

    def estimated_output_bytes(self, source: Source, quantization: str) -> int:
        """Rough size of one output, for the disk-space pre-flight (default: fp16 weights)."""
        return 2 * source.parameter_count

    def check_quantizations(self, quantizations: List[str]) -> List[str]:
        known = {q.lower(): q for q in self.supported_quantizations()}
        unknown = [q for q in quantizations if q.lower() not in known]
        if unknown:
            raise UsageError(
                f"--quant {', '.join(unknown)} is not available for --to {self.target}; "
                f"expected one of {', '.join(self.supported_quantizations())}"
            )
        return [known[q.lower()] for q in quantizations]
