"""The runner interface shared by every backend, and its generation loop.

A runner owns one loaded model. The public methods check state and inputs and run the
loop that is the same for every engine — sampling, stop strings, the deadline, cancellation,
telemetry — while each engine implements only the ``*_impl`` methods: load, tokenize,
detokenize, evaluate a prompt, evaluate one token.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Dict, List, Optional, Sequence, Type

import numpy as np

from ..chat_template import ChatTemplate, Prompt, to_messages
from ..errors import EdgertError, RunnerStateError, UsageError

FINISH_REASONS = ("stop", "eos", "length", "deadline", "cancelled")


class Deadline:
    """A wall-clock deadline on the monotonic clock. ``Deadline(None)`` never expires."""

    def __init__(self, seconds: Optional[float], start: Optional[float] = None):
        if seconds is not None and (not math.isfinite(seconds) or seconds <= 0):
            raise UsageError(f"deadline must be a positive number of seconds, found {seconds!r}")
        self.start = time.monotonic() if start is None else start
        self.seconds = seconds
        self.at = None if seconds is None else self.start + seconds

    def remaining_s(self) -> float:
        return math.inf if self.at is None else self.at - time.monotonic()

    def expired(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at

    def elapsed_s(self) -> float:
        return time.monotonic() - self.start


class CancelToken:
    """Thread-safe cancellation flag: another thread calls ``cancel()``."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


@dataclass
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: Optional[int] = None
    stop: Sequence[str] = ()

    def check(self) -> None:
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise UsageError(f"max_tokens must be a positive integer, found {self.max_tokens!r}")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise UsageError(f"temperature must be >= 0, found {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise UsageError(f"top_p must be in (0, 1], found {self.top_p!r}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise UsageError(f"stop strings must be non-empty strings, found {list(self.stop)!r}")


@dataclass
class GenerationResult:
    """The generated text and what it cost."""

    text: str
    finish_reason: str
    tokens_in: int
    tokens_out: int
    prefill_ms: float
    decode_step_ms: List[float]
    total_ms: float
    deadline_s: Optional[float] = None
    token_ids: List[int] = field(default_factory=list)
    token_logprobs: List[float] = field(default_factory=list)

    @property
    def deadline_cut(self) -> bool:
        return self.finish_reason == "deadline"

    @property
    def decode_ms(self) -> float:
        return float(sum(self.decode_step_ms))

    @property
    def decode_tokens_per_s(self) -> float:
        steps = len(self.decode_step_ms)
        return steps / (self.decode_ms / 1000) if steps and self.decode_ms > 0 else 0.0

    @property
    def mean_logprob(self) -> float:
        return float(np.mean(self.token_logprobs)) if self.token_logprobs else float("-inf")


#: on_token(text_piece, token_id) — called for every emitted piece of text
TokenCallback = Callable[[str, int], None]


class _Aborted(Exception):
    """Raised by an engine when its abort check stopped an evaluation."""


class Runner(ABC):
    """Base class of all backends. Use as a context manager: ``with Runner(...) as r:``."""

    format: ClassVar[str] = ""
    registry: ClassVar[Dict[str, Type["Runner"]]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.format:
            Runner.registry[cls.format] = cls

    def __init__(
        self,
        model_path: Path,
        *,
        n_ctx: int = 2048,
        n_threads: Optional[int] = None,
        chat_template: Optional[str] = None,
    ):
        if not isinstance(n_ctx, int) or n_ctx < 16:
            raise UsageError(f"context size must be an integer >= 16, found {n_ctx!r}")
        if n_threads is not None and (not isinstance(n_threads, int) or n_threads < 1):
            raise UsageError(f"n_threads must be a positive integer, found {n_threads!r}")
        self.model_path = Path(model_path)
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self._chat_template_source = chat_template
        self._template: Optional[ChatTemplate] = None
        self._loaded = False
        self._closed = False
        self._busy = threading.Lock()
        self._cancel: Optional[CancelToken] = None
        self.load_ms: Optional[float] = None
        self._step_estimate_s = 0.0

    # ----------------------------------------------------------------- lifecycle
    def __enter__(self) -> "Runner":
        self.load()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self) -> float:
        """Load the model; return the time it took in ms. Loading twice is a no-op."""
        if self._closed:
            raise RunnerStateError("runner is closed; create a new one")
        if self._loaded:
            return self.load_ms or 0.0
        start = time.perf_counter()
        self._load_impl()
        self._loaded = True
        template = self._chat_template_source or self._model_chat_template()
        if template:
            bos, eos = self._special_token_texts()
            self._template = ChatTemplate(template, bos_token=bos, eos_token=eos)
        self.load_ms = (time.perf_counter() - start) * 1000
        return self.load_ms

    def close(self) -> None:
        if self._loaded:
            self._close_impl()
        self._loaded = False
        self._closed = True

    def _require_loaded(self) -> None:
        if self._closed:
            raise RunnerStateError("runner is closed")
        if not self._loaded:
            raise RunnerStateError("runner is not loaded: call load() or use it in a with-block")

    # ------------------------------------------------------------------- prompts
    @property
    def has_chat_template(self) -> bool:
        return self._template is not None

    def format_prompt(self, prompt: Prompt, chat: bool = True, system: Optional[str] = None) -> str:
        """Apply the chat template to a prompt (string or messages), or pass raw text through."""
        self._require_loaded()
        if not chat:
            if not isinstance(prompt, str):
                raise UsageError("a raw (non-chat) prompt must be a string, found a message list")
            return prompt
        if self._template is None:
            if isinstance(prompt, str):
                return prompt
            raise UsageError("this model has no chat template; pass a plain string prompt with chat=False")
        return self._template.render(to_messages(prompt, system), add_generation_prompt=True)

    def tokenize(self, text: str) -> List[int]:
        self._require_loaded()
        return self._tokenize_impl(text)

    def cancel(self) -> None:
        """Cancel the generation in progress, if any (safe to call from another thread)."""
        token = self._cancel
        if token is not None:
            token.cancel()

    # ----------------------------------------------------------------- generation
    def generate(
        self,
        prompt: Prompt,
        params: Optional[SamplingParams] = None,
        *,
        deadline: Optional[Deadline] = None,
        on_token: Optional[TokenCallback] = None,
        cancel: Optional[CancelToken] = None,
        chat: bool = True,
        system: Optional[str] = None,
    ) -> GenerationResult:
        """Generate a completion, stopping at EOS, a stop string, max_tokens, the deadline
        or cancellation, whichever comes first. The deadline is checked before every decode
        step (a step predicted to overrun it is not started) and inside prompt evaluation.
        """
        self._require_loaded()
        params = params or SamplingParams()
        params.check()
        deadline = deadline or Deadline(None)
        cancel = cancel or CancelToken()
        text = self.format_prompt(prompt, chat=chat, system=system)
        prompt_ids = self._tokenize_impl(text)
        if not prompt_ids:
            raise UsageError("the prompt is empty after tokenization")
        if len(prompt_ids) + 1 > self.n_ctx:
            raise UsageError(
                f"prompt is {len(prompt_ids)} tokens; the context holds {self.n_ctx} "
                "(shorten the prompt or raise the context size)"
            )
        with self._exclusive():
            self._cancel = cancel
            try:
                return self._loop(prompt_ids, params, deadline, on_token, cancel)
            finally:
                self._cancel = None

    def _loop(
        self,
        prompt_ids: List[int],
        params: SamplingParams,
        deadline: Deadline,
        on_token: Optional[TokenCallback],
        cancel: CancelToken,
    ) -> GenerationResult:
        started = time.perf_counter()
        rng = np.random.default_rng(params.seed)
        max_new = min(params.max_tokens, self.n_ctx - len(prompt_ids))
        should_abort = lambda: cancel.cancelled or deadline.expired()  # noqa: E731
        out_ids: List[int] = []
        logprobs: List[float] = []
        steps_ms: List[float] = []
        decoder = _StopDecoder(params.stop, self._detokenize_impl)
        finish = "length"

        def result(reason: str, prefill_ms: float) -> GenerationResult:
            return GenerationResult(
                text=decoder.text,
                finish_reason=reason,
                tokens_in=len(prompt_ids),
                tokens_out=len(out_ids),
                prefill_ms=prefill_ms,
                decode_step_ms=steps_ms,
                total_ms=(time.perf_counter() - started) * 1000,
                deadline_s=deadline.seconds,
                token_ids=out_ids,
                token_logprobs=logprobs,
            )

        if should_abort():
            return result("cancelled" if cancel.cancelled else "deadline", 0.0)
        t0 = time.perf_counter()
        try:
            logits = self._prefill_impl(prompt_ids, should_abort)
        except _Aborted:
            return result("cancelled" if cancel.cancelled else "deadline", (time.perf_counter() - t0) * 1000)
        prefill_ms = (time.perf_counter() - t0) * 1000
        step_estimate_s = self._step_estimate_s  # carried over from earlier requests
        last_check = time.perf_counter()
        while True:
            token, logprob = _sample(logits, params.temperature, params.top_p, rng)
            if self._is_end_impl(token):
                finish = "eos"
                break
            out_ids.append(token)
            logprobs.append(logprob)
            piece, stopped = decoder.push(token)
            if piece and on_token is not None:
                on_token(piece, token)
            if stopped:
                finish = "stop"
                break
            if len(out_ids) >= max_new:
                finish = "length"
                break
            if cancel.cancelled:
                finish = "cancelled"
                break
            # do not start a step that the slowest recent iteration says would overrun
            now = time.perf_counter()
            step_estimate_s = max(now - last_check, 0.8 * step_estimate_s)
            last_check = now
            if deadline.remaining_s() < step_estimate_s:
                finish = "deadline"
                break
            t0 = time.perf_counter()
            try:
                logits = self._decode_impl(token, should_abort)
            except _Aborted:
                finish = "cancelled" if cancel.cancelled else "deadline"
                break
            steps_ms.append((time.perf_counter() - t0) * 1000)
        if steps_ms:
            self._step_estimate_s = float(np.median(steps_ms)) / 1000
        tail = decoder.flush()
        if tail and on_token is not None:
            on_token(tail, -1)
        return result(finish, prefill_ms)

    def logits_for(self, ids: Sequence[int]) -> np.ndarray:
        """Next-token logits at every position of ``ids`` ([len(ids), vocab]); used by the
        quality gate and for scoring."""
        self._require_loaded()
        if not 1 <= len(ids) <= self.n_ctx:
            raise UsageError(f"expected 1..{self.n_ctx} token ids, found {len(ids)}")
        with self._exclusive():
            return self._logits_for_impl(list(ids))

    def _logits_for_impl(self, ids: List[int]) -> np.ndarray:
        raise EdgertError(f"{type(self).__name__} cannot return all-position logits")

    # ------------------------------------------------------------ measurement
    def measure_prefill_ms(self, n_tokens: int) -> float:
        """Wall time to evaluate a prompt of ``n_tokens`` from an empty cache (profiler use)."""
        self._require_loaded()
        if not 1 <= n_tokens <= self.n_ctx - 1:
            raise UsageError(f"prompt length must be within 1..{self.n_ctx - 1}, found {n_tokens}")
        with self._exclusive():
            return self._measure_prefill_impl(n_tokens)

    def measure_decode_ms(self, context_len: int, batch: int = 1, steps: int = 4) -> List[float]:
        """Wall time of each of ``steps`` decode steps for ``batch`` sequences that share a
        context of ``context_len`` tokens (profiler use)."""
        self._require_loaded()
        if context_len < 1 or batch < 1 or steps < 1 or context_len + batch * steps > self.n_ctx:
            raise UsageError(
                f"decode measurement needs context_len >= 1, batch >= 1, steps >= 1 and "
                f"context_len + batch x steps within the context of {self.n_ctx}; "
                f"found {context_len}, {batch}, {steps}"
            )
        with self._exclusive():
            return self._measure_decode_impl(context_len, batch, steps)

    @contextlib.contextmanager
    def _exclusive(self):
        if not self._busy.acquire(blocking=False):
            raise RunnerStateError("runner is busy; one request at a time per runner")
        try:
            yield
        finally:
            self._busy.release()

    def _measure_prefill_impl(self, n_tokens: int) -> float:
        raise EdgertError(f"{type(self).__name__} cannot measure prefill time")

    def _measure_decode_impl(self, context_len: int, batch: int, steps: int) -> List[float]:
        raise EdgertError(f"{type(self).__name__} cannot measure decode time")

    # ------------------------------------------------------------ engine hooks
    @abstractmethod
    def _load_impl(self) -> None: ...

    @abstractmethod
    def _close_impl(self) -> None: ...

    @abstractmethod
    def _tokenize_impl(self, text: str) -> List[int]: ...

    @abstractmethod
    def _detokenize_impl(self, ids: Sequence[int]) -> bytes: ...

    @abstractmethod
    def _prefill_impl(self, ids: List[int], should_abort: Callable[[], bool]) -> np.ndarray:
        """Reset state, evaluate the prompt, return last-position logits; raise _Aborted."""

    @abstractmethod
    def _decode_impl(self, token: int, should_abort: Callable[[], bool]) -> np.ndarray:
        """Append one token, return its logits; raise _Aborted if stopped mid-step."""

    @abstractmethod
    def _is_end_impl(self, token: int) -> bool:
        """Whether the token ends generation (EOS / end-of-generation tokens)."""

    def _model_chat_template(self) -> Optional[str]:
        return None

    def _special_token_texts(self) -> tuple:
        return "", ""


NUCLEUS_CANDIDATES = 1024  # top-p looks at the most likely tokens first; full sort only if they fall short


def _sample(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator):
    """Pick the next token; return it with its log-probability under the model.

    This runs once per token over the whole vocabulary (262k entries for Gemma 3), so it
    stays in float32 and avoids sorting the vocabulary."""
    shifted = logits - logits.max()
    log_norm = math.log(float(np.exp(shifted).sum(dtype=np.float64)))
    if temperature == 0:
        token = int(np.argmax(shifted))
        return token, float(shifted[token]) - log_norm
    probs = np.exp(shifted / temperature)
    probs /= probs.sum(dtype=np.float64)
    if top_p < 1.0:
        k = min(NUCLEUS_CANDIDATES, probs.size)
        while True:  # widen the candidate set (linear-time partitions) until it holds top_p of the mass
            candidates = np.argpartition(probs, probs.size - k)[probs.size - k:]
            if k == probs.size or probs[candidates].sum(dtype=np.float64) >= top_p:
                break
            k = min(8 * k, probs.size)
        order = candidates[np.argsort(-probs[candidates], kind="stable")]
        cumulative = np.cumsum(probs[order], dtype=np.float64)
        keep = order[: int(np.searchsorted(cumulative, top_p)) + 1]
        weights = np.cumsum(probs[keep], dtype=np.float64)
    else:
        keep = None
        weights = np.cumsum(probs)  # float32 is precise enough to place one uniform draw
    index = min(int(np.searchsorted(weights, rng.random() * weights[-1], side="right")), weights.size - 1)
    token = int(keep[index]) if keep is not None else index
    return token, float(shifted[token]) - log_norm


class _StopDecoder:
    """Turns token ids into text incrementally, holding back text that might start a stop string.

    Bytes are decoded as UTF-8 only when complete, so multi-byte characters split across
    tokens are emitted whole.
    """

    def __init__(self, stop: Sequence[str], detokenize: Callable[[Sequence[int]], bytes]):
        self.stop = list(stop)
        self.detokenize = detokenize
        self.pending = b""
        self.text = ""  # emitted so far
        self.held = ""  # decoded but not yet emitted (may be a stop-string prefix)

    def push(self, token: int):
        self.pending += self.detokenize([token])
        try:
            new = self.pending.decode("utf-8")
            self.pending = b""
        except UnicodeDecodeError as exc:
            if exc.start == 0 and len(self.pending) - exc.start < 4:
                return "", False
            new = self.pending.decode("utf-8", errors="replace")
            self.pending = b""
        candidate = self.held + new
        for stop in self.stop:
            index = candidate.find(stop)
            if index >= 0:
                piece = candidate[:index]
                self.text += piece
                self.held = ""
                return piece, True
        hold = 0
        for stop in self.stop:
            for n in range(min(len(stop) - 1, len(candidate)), 0, -1):
                if candidate.endswith(stop[:n]):
                    hold = max(hold, n)
                    break
        piece = candidate[: len(candidate) - hold]
        self.held = candidate[len(candidate) - hold :]
        self.text += piece
        return piece, False

    def flush(self) -> str:
        tail = self.held + (self.pending.decode("utf-8", errors="replace") if self.pending else "")
        self.held, self.pending = "", b""
        self.text += tail
        return tail


def runner_for(fmt: str) -> Type[Runner]:
    """The runner class registered for an artifact format."""
    import importlib

    # each runner module registers itself on import; they import their engines lazily
    for module in ("llama_cpp", "onnxruntime", "tensorrt"):
        try:
            importlib.import_module(f"{__package__}.{module}")
        except ImportError:
            pass
    if fmt not in Runner.registry:
        raise EdgertError(f"no runner for format {fmt!r}; available: {sorted(Runner.registry)}")
    return Runner.registry[fmt]
