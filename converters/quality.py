"""The quality gate: compare every converted artifact with its source before accepting it.

Language models are compared on next-token distributions over a text sample that ships
with edgert (``data/sample_en.txt``, written for the project) and a few chat prompts:
mean KL divergence KL(source || candidate), top-1 agreement, and perplexity with its
relative change. Other networks are compared on outputs: max absolute difference and
cosine similarity.

Default thresholds are anchored to llama.cpp's published KL-divergence figures for
Llama-3-8B (mean KLD about 0.0014 for Q8_0 and 0.03 for Q4_K_M; see llama.cpp's
``tools/perplexity/README.md``), loosened because small models lose more to
quantization; the values were set from measurements on SmolLM2-135M (see
``docs/quality-gate.md``) and live in each target's quantization table (``gate`` field of
``gguf_writer.QUANTIZATIONS``, ``onnx_convert.QUANTIZATIONS``, ``tensorrt_convert.QUANTIZATIONS``).
Every threshold can be overridden.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Protocol, Sequence

import numpy as np

from edgert.errors import ConversionError
from edgert.runners.registry import runner_for

from .source import quiet_transformers

DATA = Path(__file__).parent / "data"
SAMPLE_TEXT = DATA / "sample_en.txt"
CHAT_PROMPTS = DATA / "chat_prompts.json"


class LogitsModel(Protocol):
    """Anything that returns next-token logits at every position of a token sequence."""

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """float array [len(ids), vocab]: row i predicts token i + 1."""


@dataclass(frozen=True)
class Thresholds:
    """Gate limits for language models (next-token distributions against the source)."""

    max_mean_kld: float
    min_top1: float
    max_ppl_increase_pct: float

    def override(self, values: Dict[str, float]) -> "Thresholds":
        known = list(self.__dict__)
        unknown = sorted(set(values) - set(known))
        if unknown:  # convert() refuses these before any work; this is for direct callers of the gate
            raise ConversionError(f"gate threshold(s) {', '.join(unknown)}: expected {', '.join(known)}")
        return Thresholds(**{**self.__dict__, **values})


@dataclass
class GateResult:
    passed: bool
    metrics: Dict[str, float]
    thresholds: Dict[str, float]
    failures: List[str] = field(default_factory=list)
    tool_versions: Dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return {"passed": self.passed, "metrics": self.metrics, "thresholds": self.thresholds,
                "failures": self.failures, "tool_versions": self.tool_versions}


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def compare_logits(reference: np.ndarray, candidate: np.ndarray, ids: Sequence[int]) -> Dict[str, np.ndarray]:
    """Per-position KLD, top-1 agreement and next-token NLL of both models."""
    vocab = min(reference.shape[-1], candidate.shape[-1])  # GGUF vocabularies may be padded
    lr, lc = _log_softmax(reference[:, :vocab]), _log_softmax(candidate[:, :vocab])
    kld = (np.exp(lr) * (lr - lc)).sum(axis=-1)
    agree = lr.argmax(-1) == lc.argmax(-1)
    nxt = np.asarray(ids[1:])
    rows = np.arange(len(nxt))
    return {"kld": kld, "top1": agree, "nll_ref": -lr[rows, nxt], "nll_cand": -lc[rows, nxt]}


def evaluate_lm(reference: LogitsModel, candidate: LogitsModel, windows: Sequence[Sequence[int]]) -> Dict[str, float]:
    parts: Dict[str, List[np.ndarray]] = {"kld": [], "top1": [], "nll_ref": [], "nll_cand": []}
    for ids in windows:
        result = compare_logits(reference.logits(ids), candidate.logits(ids), ids)
        for key in parts:
            parts[key].append(result[key])
    kld = np.concatenate(parts["kld"])
    nll_ref, nll_cand = np.concatenate(parts["nll_ref"]), np.concatenate(parts["nll_cand"])
    ppl_ref, ppl_cand = math.exp(nll_ref.mean()), math.exp(nll_cand.mean())
    return {
        "mean_kld": float(kld.mean()),
        "p99_kld": float(np.percentile(kld, 99)),
        "top1_agreement": float(np.concatenate(parts["top1"]).mean()),
        "ppl_source": ppl_ref,
        "ppl_candidate": ppl_cand,
        "ppl_change_pct": 100 * (ppl_cand - ppl_ref) / ppl_ref,
        "n_tokens": int(kld.size),
    }


def judge(metrics: Dict[str, float], thresholds: Thresholds) -> GateResult:
    failures = []
    if metrics["mean_kld"] > thresholds.max_mean_kld:
        failures.append(f"mean KLD {metrics['mean_kld']:.4f} > {thresholds.max_mean_kld}")
    if metrics["top1_agreement"] < thresholds.min_top1:
        failures.append(f"top-1 agreement {metrics['top1_agreement']:.3f} < {thresholds.min_top1}")
    if metrics["ppl_change_pct"] > thresholds.max_ppl_increase_pct:
        failures.append(f"perplexity +{metrics['ppl_change_pct']:.1f}% > +{thresholds.max_ppl_increase_pct}%")
    return GateResult(not failures, metrics, dict(thresholds.__dict__), failures)


def text_windows(tokenize, window: int = 256, max_windows: int = 6, chat_format=None) -> List[List[int]]:
    """Token windows over the shipped text sample, plus the chat prompts (templated when the
    model has a chat template) — what every language-model gate is measured on."""
    ids = tokenize(SAMPLE_TEXT.read_text())
    windows = [ids[i : i + window] for i in range(0, len(ids) - window + 1, window)][:max_windows]
    for prompt in json.loads(CHAT_PROMPTS.read_text()):
        text = chat_format(prompt) if chat_format else prompt
        prompt_ids = tokenize(text)
        if len(prompt_ids) >= 4:
            windows.append(prompt_ids)
    return windows


def compare_outputs(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> Dict[str, float]:
    """For non-LLM networks: worst absolute difference and the lowest cosine similarity."""
    max_abs, min_cos = 0.0, 1.0
    for r, c in zip(reference, candidate):
        r, c = np.asarray(r, dtype=np.float64).ravel(), np.asarray(c, dtype=np.float64).ravel()
        max_abs = max(max_abs, float(np.abs(r - c).max()))
        denom = np.linalg.norm(r) * np.linalg.norm(c)
        min_cos = min(min_cos, float(r @ c / denom) if denom else 1.0)
    return {"max_abs_diff": max_abs, "min_cosine": min_cos}


class TorchReference:
    """The source model in PyTorch (fp32): the reference every conversion is judged against."""

    def __init__(self, hf_dir: Path):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        quiet_transformers()
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(hf_dir))
        self.model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32)
        self.model.eval()
        self._cache: Dict[tuple, np.ndarray] = {}  # the reference is evaluated once per window

    def tokenize(self, text: str) -> List[int]:
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def chat_format(self, prompt: str) -> Optional[str]:
        if not getattr(self.tokenizer, "chat_template", None):
            return prompt
        return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                  add_generation_prompt=True)

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        key = tuple(ids)
        if key not in self._cache:
            with self.torch.no_grad():
                out = self.model(self.torch.tensor([list(ids)]))
            self._cache[key] = out.logits[0].float().numpy()
        return self._cache[key]

    def windows(self) -> List[List[int]]:
        return text_windows(self.tokenize, chat_format=self.chat_format)


class RunnerLogits:
    """An artifact evaluated by edgert's runner for its format (all-position logits in one pass):
    the candidate side of every language-model gate. ``options`` go to the runner
    (``n_ctx``, ``n_threads``, ``n_seq_max``, ``engine_key``)."""

    def __init__(self, fmt: str, path: Path, **options: Any):
        self.runner = runner_for(fmt)(path, **options)
        self.runner.load()

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        return self.runner.logits_for(list(ids))

    def close(self) -> None:
        self.runner.close()

    def __enter__(self) -> "RunnerLogits":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
