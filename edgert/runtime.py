"""The runtime an application embeds: open a bundle, load a variant, answer by a deadline."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

from .bundle import Bundle, Variant
from .chat_template import Prompt
from .errors import DeadlineError
from .runners.base import CancelToken, Deadline, GenerationResult, Runner, SamplingParams, TokenCallback, runner_for


@dataclass
class RuntimeResult:
    """An answer with its telemetry."""

    text: str
    variant: str
    finish_reason: str
    latency_ms: float
    load_ms: float
    generation: GenerationResult

    @property
    def deadline_s(self) -> Optional[float]:
        return self.generation.deadline_s

    @property
    def deadline_cut(self) -> bool:
        return self.generation.deadline_cut

    @property
    def deadline_met(self) -> Optional[bool]:
        """Whether the answer arrived by the deadline (None when there was no deadline)."""
        if self.deadline_s is None:
            return None
        return self.latency_ms <= self.deadline_s * 1000

    def to_dict(self) -> Dict[str, object]:
        g = self.generation
        return {
            "text": self.text,
            "variant": self.variant,
            "finish_reason": self.finish_reason,
            "deadline_s": self.deadline_s,
            "deadline_met": self.deadline_met,
            "deadline_cut": self.deadline_cut,
            "latency_ms": round(self.latency_ms, 3),
            "load_ms": round(self.load_ms, 3),
            "tokens_in": g.tokens_in,
            "tokens_out": g.tokens_out,
            "prefill_ms": round(g.prefill_ms, 3),
            "decode_ms": round(g.decode_ms, 3),
            "decode_tokens_per_s": round(g.decode_tokens_per_s, 2),
            "decode_step_ms": [round(x, 3) for x in g.decode_step_ms],
        }


def default_threads() -> int:
    """Physical cores are what llama.cpp scales with; fall back to logical CPUs."""
    try:
        import psutil

        cores = psutil.cpu_count(logical=False)
    except Exception:  # psutil missing or unable to tell
        cores = None
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or available or 1, available or 1))


def open_runner(bundle: Bundle, variant: Variant, *, n_ctx: int, n_threads: Optional[int]) -> Runner:
    """An unloaded runner for a bundle variant; the artifact's sha256 is checked first, and
    format-specific manifest data (a TensorRT engine's compatibility key) is passed along."""
    path = bundle.artifact(variant)
    extra = {"engine_key": variant.extra.get("engine")} if variant.format == "tensorrt" else {}
    return runner_for(variant.format)(path, n_ctx=n_ctx, n_threads=n_threads, **extra)


class Runtime:
    """Answers prompts from a bundle. One loaded variant at a time; thread-safe cancel()."""

    def __init__(
        self,
        bundle: Union[Bundle, str, os.PathLike],
        variant: Optional[str] = None,
        *,
        n_ctx: int = 2048,
        n_threads: Optional[int] = None,
    ):
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(Path(bundle))
        self.default_variant = self.bundle.variant(variant).name
        self.n_ctx = n_ctx
        self.n_threads = n_threads or default_threads()
        self._runner: Optional[Runner] = None
        self._runner_variant: Optional[str] = None
        self._lock = threading.Lock()
        self._cancel: Optional[CancelToken] = None

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()
        self._runner = None
        self._runner_variant = None

    def load(self, variant: Optional[str] = None) -> float:
        """Verify and load a variant (the default one if None); return the load time in ms."""
        chosen = self.bundle.variant(variant or self.default_variant)
        if self._runner is not None and self._runner_variant == chosen.name:
            return 0.0
        start = time.perf_counter()
        self.close()
        runner = open_runner(self.bundle, chosen, n_ctx=min(self.n_ctx, chosen.context_length or self.n_ctx),
                             n_threads=self.n_threads)
        runner.load()
        self._runner, self._runner_variant = runner, chosen.name
        return (time.perf_counter() - start) * 1000

    @property
    def runner(self) -> Optional[Runner]:
        return self._runner

    def variant(self, name: Optional[str] = None) -> Variant:
        return self.bundle.variant(name or self.default_variant)

    def generate(
        self,
        prompt: Prompt,
        *,
        deadline_s: Optional[float] = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: Optional[int] = None,
        stop: Sequence[str] = (),
        variant: Optional[str] = None,
        on_token: Optional[TokenCallback] = None,
        chat: bool = True,
        system: Optional[str] = None,
    ) -> RuntimeResult:
        """Answer ``prompt`` by ``deadline_s`` seconds from now (loading counts against it)."""
        deadline = Deadline(deadline_s)
        params = SamplingParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed, stop=tuple(stop))
        params.check()
        with self._lock:
            load_ms = self.load(variant)
            if deadline.expired():
                raise DeadlineError(
                    f"the deadline of {deadline_s * 1000:.0f} ms is shorter than loading the model "
                    f"({load_ms:.0f} ms); call Runtime.load() first or allow more time"
                )
            self._cancel = CancelToken()
            runner = self._runner
            assert runner is not None
            try:
                result = runner.generate(
                    prompt, params, deadline=deadline, on_token=on_token, cancel=self._cancel, chat=chat, system=system
                )
            finally:
                self._cancel = None
        return RuntimeResult(
            text=result.text,
            variant=self._runner_variant or "",
            finish_reason=result.finish_reason,
            latency_ms=deadline.elapsed_s() * 1000,
            load_ms=load_ms,
            generation=result,
        )

    def cancel(self) -> None:
        """Stop the request in progress from another thread; it returns what it has."""
        token = self._cancel
        if token is not None:
            token.cancel()
