"""The runner interface shared by every backend, and its generation loop.

A runner owns one loaded model. The public methods check state and inputs and run the
loop that is the same for every engine — sampling, stop strings, the deadline, cancellation,
telemetry — while each engine implements only the ``*_impl`` methods: load, tokenize,
detokenize, evaluate a prompt, evaluate one token (and, for batching engines, fork the
prompt's cache and evaluate one token for several sequences).

``_loop`` is the one decode loop, for one sequence or several sampled together: one
sequence takes the engine's unbatched calls, so its per-token cost is that of a plain loop.
The file is over 400 lines because the public methods, the engine hooks they call and the
loop that ties them together are one contract; sampling and stop strings are in
``sampling.py``, the plain data in ``types.py``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, ClassVar, Dict, List, Optional, Sequence, Type

import numpy as np

from ..chat_template import ChatTemplate, Prompt, to_messages
from ..errors import EdgertError, RunnerStateError, UsageError
from .guidance import MAX_CLOSE_TOKENS, STEER_STEPS, Guide, GuidedSequence
from .sampling import StopDecoder, TokenSampler, top2_margin
from .types import (RETURN_MARGIN_S, CancelToken, Deadline, GenerationResult, SamplingParams,
                    StepRecord, TokenCallback)

#: a fresh runner's guess of one decode step, in prefill times per token (measured here:
#: SmolLM2 decode step ~11 ms against ~4.5 ms per prefill token; Gemma-3-270M ~16 against
#: ~7); conservative, and replaced by measured steps from the first request on
FIRST_STEP_PER_PREFILL_TOKEN = 3.0

# public-domain text (Jules Verne, "Twenty Thousand Leagues Under the Sea", 1870, tr. 1872)
# used as realistic token filler for timing measurements
FILLER_TEXT = (
    "The year 1866 was signalised by a remarkable incident, a mysterious and puzzling phenomenon, "
    "which doubtless no one has yet forgotten. Not to mention rumours which agitated the maritime "
    "population and excited the public mind, even in the interior of continents, seafaring men were "
    "particularly excited. Merchants, common sailors, captains of vessels, skippers, both of Europe "
    "and America, naval officers of all countries, and the Governments of several States on the two "
    "continents, were deeply interested in the matter."
)


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
        self._last_step_s = 0.0  # median decode step of the last single-sequence request
        self._prefix_hit = 0  # prompt tokens the last prefill found already evaluated
        self._guide: Optional[Guide] = None  # built on the first constrained request

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

    @property
    def chat_template_source(self) -> Optional[str]:
        return self._template.source if self._template is not None else None

    def format_prompt(self, prompt: Prompt, chat: bool = True, system: Optional[str] = None,
                      tools: Optional[Sequence[dict]] = None) -> str:
        """Apply the chat template to a prompt (string or messages), or pass raw text through.

        tools: OpenAI-style tool definitions, given to the template as ``tools``."""
        self._require_loaded()
        if not chat:
            if not isinstance(prompt, str):
                raise UsageError("a raw (non-chat) prompt must be a string, found a message list")
            return prompt
        if self._template is None:
            if isinstance(prompt, str):
                return prompt
            raise UsageError("this model has no chat template; pass a plain string prompt with chat=False")
        extra = {"tools": list(tools)} if tools else {}
        return self._template.render(to_messages(prompt, system), add_generation_prompt=True, **extra)

    def tokenize(self, text: str) -> List[int]:
        self._require_loaded()
        return self._tokenize_impl(text)

    def set_threads(self, n_threads: int) -> None:
        """Change the thread count between requests (a power knob on CPUs)."""
        self._require_loaded()
        if not isinstance(n_threads, int) or n_threads < 1:
            raise UsageError(f"n_threads must be a positive integer, found {n_threads!r}")
        if n_threads != self.n_threads:
            with self._exclusive():
                self._set_threads_impl(n_threads)
                self.n_threads = n_threads
                self._last_step_s = 0.0  # step times measured at the old count no longer apply

    def _set_threads_impl(self, n_threads: int) -> None:
        raise EdgertError(f"{type(self).__name__} cannot change its thread count after loading")

    def guide(self) -> Guide:
        """This model's constrained-decoding tokenizer, built once (0.2-1 s) on first use."""
        self._require_loaded()
        if self._guide is None:
            self._guide = self._guide_impl()
        return self._guide

    @property
    def has_guide(self) -> bool:
        """Whether the constrained-decoding tokenizer is built already."""
        return self._guide is not None

    def _guide_impl(self) -> Guide:
        raise EdgertError(f"{type(self).__name__} cannot decode with constraints")

    def _guided(self, params: SamplingParams) -> Optional[GuidedSequence]:
        return None if params.constraint is None else self.guide().sequence(params.constraint)

    def forget_cache(self) -> None:
        """Make the next prompt evaluate from scratch (prefix reuse off for one request)."""
        self._require_loaded()
        with self._exclusive():
            self._forget_cache_impl()

    def _forget_cache_impl(self) -> None:
        pass

    def cancel(self) -> None:
        """Cancel the generation in progress, if any (safe to call from another thread)."""
        token = self._cancel
        if token is not None:
            token.cancel()

    # ----------------------------------------------------------------- generation
    def encode(self, prompt: Prompt, *, chat: bool = True, system: Optional[str] = None,
               tools: Optional[Sequence[dict]] = None) -> List[int]:
        """The token ids a prompt becomes (chat template applied when ``chat``)."""
        self._require_loaded()
        ids = self._tokenize_impl(self.format_prompt(prompt, chat=chat, system=system, tools=tools))
        if not ids:
            raise UsageError("the prompt is empty after tokenization")
        return ids

    def tokenize_continuation(self, text: str) -> List[int]:
        """Token ids of text appended to a sequence (no BOS)."""
        self._require_loaded()
        ids = self._tokenize_impl(text)
        bos = self._bos_id_impl()
        return ids[1:] if ids and bos is not None and ids[0] == bos else ids

    @staticmethod
    def _strip_double_bos(ids: List[int], bos: Optional[int]) -> List[int]:
        """Drop the second of two leading BOS tokens: the chat template wrote BOS itself and
        the tokenizer added another."""
        if bos is not None and len(ids) >= 2 and ids[0] == ids[1] == bos:
            return ids[1:]
        return ids

    def token_bytes(self, token: int) -> bytes:
        """One token's bytes (a character may span tokens, so this is not always text)."""
        self._require_loaded()
        return self._detokenize_impl([int(token)])

    def detokenize(self, ids: Sequence[int]) -> str:
        self._require_loaded()
        return self._detokenize_impl(list(ids)).decode("utf-8", errors="replace")

    @property
    def max_parallel(self) -> int:
        """How many sequences one batched decode step can carry (1: no batching)."""
        return 1

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
        tools: Optional[Sequence[dict]] = None,
    ) -> GenerationResult:
        """Generate a completion, stopping at EOS, a stop string, max_tokens, the deadline
        or cancellation, whichever comes first. The deadline is checked before every decode
        step (a step predicted to overrun it is not started) and inside prompt evaluation.
        """
        self._require_loaded()
        return self.generate_ids(self.encode(prompt, chat=chat, system=system, tools=tools), params,
                                 deadline=deadline, on_token=on_token, cancel=cancel)

    def generate_ids(
        self,
        prompt_ids: Sequence[int],
        params: Optional[SamplingParams] = None,
        *,
        deadline: Optional[Deadline] = None,
        on_token: Optional[TokenCallback] = None,
        cancel: Optional[CancelToken] = None,
    ) -> GenerationResult:
        """``generate`` from token ids (a prompt already encoded, or one extended by a strategy)."""
        self._require_loaded()
        params, deadline, cancel, prompt_ids = self._check_request(prompt_ids, params, deadline, cancel, 1)
        log: List[StepRecord] = []
        with self._exclusive():
            self._cancel = cancel
            try:
                return self._loop(prompt_ids, [params.seed], params, deadline, cancel, log, on_token)[0]
            finally:
                self._cancel = None

    def generate_many(
        self,
        prompt_ids: Sequence[int],
        n: int,
        params: Optional[SamplingParams] = None,
        *,
        deadline: Optional[Deadline] = None,
        cancel: Optional[CancelToken] = None,
        should_stop: Optional[Callable[[List["GenerationResult"]], bool]] = None,
    ) -> List[GenerationResult]:
        """``n`` samples of one prompt (sample i uses seed + i). Backends that batch run them
        in parallel over the prompt's shared cache, others one after another. After each
        sample finishes, ``should_stop(finished)`` may end the rest early: they are returned
        with finish_reason "dropped" (a sample never started has no tokens)."""
        self._require_loaded()
        if not isinstance(n, int) or n < 1:
            raise UsageError(f"the number of samples must be a positive integer, found {n!r}")
        params, deadline, cancel, prompt_ids = self._check_request(prompt_ids, params, deadline, cancel,
                                                                    min(n, self.max_parallel))
        finished: List[GenerationResult] = []
        results: List[GenerationResult] = []
        log: List[StepRecord] = []  # shared by every result of this call
        with self._exclusive():
            self._cancel = cancel
            try:
                start = 0
                while start < n:
                    width = min(self.max_parallel, n - start)
                    stopped = should_stop is not None and finished and should_stop(finished)
                    if stopped or cancel.cancelled or deadline.remaining_s() <= RETURN_MARGIN_S:
                        reason = "dropped" if stopped else ("cancelled" if cancel.cancelled else "deadline")
                        results += [self.empty_result(prompt_ids, reason, deadline, log) for _ in range(n - start)]
                        break
                    seeds = [None if params.seed is None else params.seed + start + i for i in range(width)]
                    # a single sample is checked against should_stop between waves only
                    wave = self._loop(prompt_ids, seeds, params, deadline, cancel, log,
                                      should_stop=should_stop if width > 1 else None, finished_before=finished)
                    finished += [r for r in wave if r.finish_reason != "dropped"]
                    results += wave
                    start += width
            finally:
                self._cancel = None
        return results

    def _check_request(self, prompt_ids, params, deadline, cancel, width: int):
        params = params or SamplingParams()
        params.check()
        prompt_ids = [int(t) for t in prompt_ids]
        if not prompt_ids:
            raise UsageError("the prompt is empty")
        room = (self.n_ctx - len(prompt_ids)) // width
        if room < 1:
            raise UsageError(
                f"prompt is {len(prompt_ids)} tokens; the context holds {self.n_ctx}"
                + (f" shared by {width} parallel samples" if width > 1 else "")
                + " (shorten the prompt or raise the context size)"
            )
        return params, deadline or Deadline(None), cancel or CancelToken(), prompt_ids

    def empty_result(self, prompt_ids: Sequence[int], reason: str, deadline: Deadline,
                     steps: Optional[List[StepRecord]] = None) -> GenerationResult:
        """A result with no tokens (a sample never started: cut by the deadline, cancelled, dropped)."""
        return GenerationResult(text="", finish_reason=reason, tokens_in=len(prompt_ids), tokens_out=0,
                                prefill_ms=0.0, decode_step_ms=[], total_ms=0.0, deadline_s=deadline.seconds,
                                steps=steps if steps is not None else [])

    def step_estimate_s(self) -> float:
        """The median decode step of the last single-sequence request, in seconds (0: none yet)."""
        return self._last_step_s

    def _first_step_estimate_s(self, prefill_ms: float, evaluated: int) -> float:
        """What the first decode step of a request may take: the median step of earlier
        requests; before any, FIRST_STEP_PER_PREFILL_TOKEN x the prefill time per token (a
        step reads all weights for one token; CPU prefill amortizes that over many)."""
        if self._last_step_s > 0 or evaluated < 1:
            return self._last_step_s
        return FIRST_STEP_PER_PREFILL_TOKEN * prefill_ms / 1000 / evaluated

    def _loop(
        self,
        prompt_ids: List[int],
        seeds: List[Optional[int]],
        params: SamplingParams,
        deadline: Deadline,
        cancel: CancelToken,
        log: List[StepRecord],
        on_token: Optional[TokenCallback] = None,
        should_stop: Optional[Callable[[List[GenerationResult]], bool]] = None,
        finished_before: Sequence[GenerationResult] = (),
    ) -> List[GenerationResult]:
        """Decode ``len(seeds)`` samples of one prompt, one step per token for all of them.

        One sequence takes the engine's unbatched calls (``_decode_impl``); several share the
        evaluated prompt (``_fork_impl``) and step together (``_decode_batch_impl``). Before
        every step the deadline is checked against the slowest recent step; the engines check
        it inside prompt evaluation. Step records go to ``log`` (and the results carry it).
        """
        n = len(seeds)
        started = time.perf_counter()
        should_abort = lambda: cancel.cancelled or deadline.remaining_s() <= RETURN_MARGIN_S  # noqa: E731
        max_new = min(params.max_tokens, (self.n_ctx - len(prompt_ids)) // n)
        samplers = [TokenSampler(params, np.random.default_rng(seed), self._is_end_impl, self._guided(params))
                    for seed in seeds]
        guides = [sampler.guided for sampler in samplers]
        outs: List[List[int]] = [[] for _ in range(n)]
        logprobs: List[List[float]] = [[] for _ in range(n)]
        margins: List[Optional[float]] = [None] * n
        steps: List[List[float]] = [[] for _ in range(n)]
        decoders = [StopDecoder(params.stop, self._detokenize_impl) for _ in range(n)]
        results: List[Optional[GenerationResult]] = [None] * n
        live = list(range(n))
        prefill_ms = 0.0
        self._prefix_hit = 0

        def emit(i: int, token: int) -> bool:
            """Append a token to sequence i and stream its text; True if a stop string ended it."""
            outs[i].append(token)
            piece, stopped = decoders[i].push(token)
            if piece and on_token is not None:
                on_token(piece, token)
            return stopped

        def close(i: int, reason: str) -> None:
            guide = guides[i]
            if guide is not None and reason in ("deadline", "length") and outs[i] and not guide.satisfied:
                # (an answer the model has not begun is not made up by the grammar: it stays unsatisfied)
                # close the structure without the model: a mask per token, no decode step
                limit = max_new - len(outs[i]) if reason == "length" else MAX_CLOSE_TOKENS
                until = time.perf_counter() + max(0.0, deadline.remaining_s() - RETURN_MARGIN_S / 2)
                for token in guide.closing_path(limit, until=until, commit=True)[0]:
                    logprobs[i].append(0.0)  # chosen by the grammar, not drawn from the model
                    if emit(i, token):
                        break
            tail = decoders[i].flush()
            if tail and on_token is not None:
                on_token(tail, -1)
            results[i] = GenerationResult(
                text=decoders[i].text, finish_reason=reason, tokens_in=len(prompt_ids), tokens_out=len(outs[i]),
                prefill_ms=prefill_ms, decode_step_ms=steps[i], total_ms=(time.perf_counter() - started) * 1000,
                deadline_s=deadline.seconds, token_ids=outs[i], token_logprobs=logprobs[i],
                cached_tokens=self._prefix_hit, steps=log, first_margin=margins[i],
                constraint_satisfied=None if guide is None else guide.satisfied,
                mask_ms=[] if guide is None else guide.mask_ms, closed_tokens=0 if guide is None else guide.closed_tokens,
                top_logprobs=samplers[i].alternatives,
            )

        def close_all(reason: str) -> List[GenerationResult]:
            for i in live:
                close(i, reason)
            return list(results)  # type: ignore[arg-type]

        def aborted() -> str:
            return "cancelled" if cancel.cancelled else "deadline"

        if should_abort():
            return close_all(aborted())
        t0 = time.perf_counter()
        try:
            first = self._prefill_impl(prompt_ids, should_abort)
        except _Aborted:
            prefill_ms = (time.perf_counter() - t0) * 1000  # a lower bound of the prefill time, still worth learning from
            log.append(StepRecord("prefill-cut", len(prompt_ids) - self._prefix_hit, len(prompt_ids), prefill_ms))
            return close_all(aborted())
        prefill_ms = (time.perf_counter() - t0) * 1000
        log.append(StepRecord("prefill", len(prompt_ids) - self._prefix_hit, len(prompt_ids), prefill_ms))
        if n > 1:
            self._fork_impl(n)
        logits = [first] * n
        step_estimate_s = self._first_step_estimate_s(prefill_ms, len(prompt_ids) - self._prefix_hit)
        last_check = time.perf_counter()
        reason = ""  # why the live samples end, once the loop stops with some left
        while True:
            tokens: List[int] = []
            newly_done = False
            mask_before = sum(len(g.mask_ms) and g.mask_ms[-1] for g in guides if g is not None)
            for i in list(live):
                if margins[i] is None:
                    margins[i] = top2_margin(logits[i])
                token, logprob = samplers[i].pick(logits[i])
                if self._is_end_impl(token):
                    live.remove(i)
                    close(i, "eos")
                    newly_done = True
                    continue
                samplers[i].accept(token)
                logprobs[i].append(logprob)
                stopped = emit(i, token)
                guide = guides[i]
                if guide is not None and not stopped and guide.finished:
                    stopped = True  # the grammar allows nothing more: the answer is complete
                if guide is not None and not stopped and len(outs[i]) < max_new:
                    if guide.must_close(max_new - len(outs[i]), max_new):
                        live.remove(i)
                        close(i, "length")  # only just room to close: close now
                        newly_done = True
                        continue
                if stopped or len(outs[i]) >= max_new:
                    live.remove(i)
                    close(i, "stop" if stopped else "length")
                    newly_done = True
                    continue
                tokens.append(token)
            mask_ms = sum(len(g.mask_ms) and g.mask_ms[-1] for g in guides if g is not None) - mask_before
            if newly_done and should_stop is not None:
                if should_stop(list(finished_before) + [r for r in results if r is not None]):
                    reason = "dropped"
                    break
            if not live:
                break
            if cancel.cancelled:
                reason = "cancelled"
                break
            # do not start a step that the slowest recent iteration says would overrun
            now = time.perf_counter()
            step_estimate_s = max(now - last_check, 0.8 * step_estimate_s)
            last_check = now
            reserve_s = max((guides[i].close_reserve_s() for i in live if guides[i] is not None), default=0.0)
            if reserve_s and deadline.remaining_s() < STEER_STEPS * step_estimate_s + RETURN_MARGIN_S + reserve_s:
                for i in live:  # the end is near: let the model close what it opened
                    if guides[i] is not None:
                        guides[i].steering = True
            if deadline.remaining_s() < step_estimate_s + RETURN_MARGIN_S + reserve_s:
                reason = "deadline"
                break
            context = len(prompt_ids) + len(outs[live[0]])
            t0 = time.perf_counter()
            try:
                if n == 1:
                    logits[0] = self._decode_impl(tokens[0], should_abort)
                else:
                    rows = self._decode_batch_impl(tokens, live, context - 1)
            except _Aborted:
                reason = aborted()
                break
            step_ms = (time.perf_counter() - t0) * 1000 + max(mask_ms, 0.0)  # a constraint's masks are part of a step
            log.append(StepRecord("decode", len(live), context, step_ms))
            if n == 1:
                steps[0].append(step_ms)
            else:
                for row, i in enumerate(live):
                    logits[i] = rows[row]
                    steps[i].append(step_ms)
        if n == 1 and steps[0]:  # batched steps are slower and would mislead the next single request
            self._last_step_s = float(np.median(steps[0])) / 1000
        return close_all(reason)

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

    def _filler_ids(self, n: int) -> List[int]:
        """``n`` token ids of realistic text, for timing measurements."""
        base = self._tokenize_impl(FILLER_TEXT)
        return (base * (n // len(base) + 1))[:n]

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

    def _fork_impl(self, n: int) -> None:
        """Copy sequence 0 (the evaluated prompt) to sequences 1..n-1 (batching backends)."""
        raise EdgertError(f"{type(self).__name__} cannot decode several sequences at once")

    def _decode_batch_impl(self, tokens: List[int], seqs: List[int], position: int) -> np.ndarray:
        """Append tokens[k] to sequence seqs[k] at ``position``; return their logits [k, vocab]."""
        raise EdgertError(f"{type(self).__name__} cannot decode several sequences at once")

    def _bos_id_impl(self) -> Optional[int]:
        return None

    def _model_chat_template(self) -> Optional[str]:
        return None

    def _special_token_texts(self) -> tuple:
        return "", ""

