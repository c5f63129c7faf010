"""The llama.cpp runner, on llama.cpp's C API as bound by llama-cpp-python.

edgert drives the C API directly (model and context creation, ``llama_tokenize``,
``llama_decode`` on a ``llama_batch``, ``llama_get_logits_ith``) rather than the
``llama_cpp.Llama`` wrapper, so it controls every step: it times each one, samples
itself, installs llama.cpp's abort callback while a prompt is evaluated (a long prefill
stops at the deadline, not after it), and runs several sequences in one batch over a
shared (unified) KV cache, which the profiler and the test-time strategies use.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import logging
import time
from typing import Callable, List, Optional, Sequence

import numpy as np

from ..errors import BackendUnavailableError, EdgertError, GenerationError, ModelFileError, UsageError
from ..formats.gguf import read_header
from .base import Runner, _Aborted
from .guidance import Guide
from ..version import distribution_version

N_BATCH = 512
N_SEQ_MAX = 8  # parallel sequences per context (self-consistency / best-of-N, batch profiling)

#: every llama.cpp symbol edgert calls through llama-cpp-python's ctypes bindings. The 0.3.x
#: releases rename symbols (llama_kv_self_* became llama_memory_*), so they are checked once at
#: import: a rename is a one-line error naming the version, not an AttributeError mid-load.
LLAMA_SYMBOLS = (
    "ggml_abort_callback", "llama_backend_init", "llama_batch_free", "llama_batch_init",
    "llama_context_default_params", "llama_decode", "llama_free", "llama_get_logits_ith", "llama_get_memory",
    "llama_init_from_model", "llama_log_callback", "llama_log_set", "llama_memory_clear", "llama_memory_seq_cp",
    "llama_memory_seq_rm", "llama_model_default_params", "llama_model_free", "llama_model_get_vocab",
    "llama_model_load_from_file", "llama_set_abort_callback", "llama_set_n_threads", "llama_supports_gpu_offload",
    "llama_token", "llama_token_to_piece", "llama_tokenize", "llama_vocab_bos", "llama_vocab_eos",
    "llama_vocab_is_eog", "llama_vocab_n_tokens",
)
LLAMA_DISTRIBUTION = "llama-cpp-python"

# llama_decode return codes (llama.h)
DECODE_OK, DECODE_NO_KV_SLOT, DECODE_ABORTED = 0, 1, 2


# ggml_log_level (ggml.h): NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5 (continues a line)
GGML_LOG_LEVELS = {0: logging.CRITICAL, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}
GGML_LOG_CONT = 5
log = logging.getLogger("edgert.llama_cpp")
log.addHandler(logging.NullHandler())
_log_callback = None
_last_level = logging.DEBUG


def supported_range() -> str:
    """The llama-cpp-python versions edgert declares (from its installed metadata: one place)."""
    try:
        for requirement in importlib.metadata.requires("edgert") or ():
            name, _, rest = requirement.partition(";")
            if name.strip().lower().startswith(LLAMA_DISTRIBUTION) and not rest:
                return name.strip()
    except importlib.metadata.PackageNotFoundError:
        pass
    return f"{LLAMA_DISTRIBUTION} (the range in edgert's pyproject.toml)"


def check_symbols(module) -> None:
    """Raise BackendUnavailableError naming the installed version and the supported range when
    ``module`` (llama_cpp) lacks a symbol edgert uses."""
    missing = [name for name in LLAMA_SYMBOLS if not hasattr(module, name)]
    if missing:
        version = getattr(module, "__version__", None) or distribution_version(LLAMA_DISTRIBUTION) or "unknown"
        raise BackendUnavailableError(
            f"llama-cpp-python {version} lacks llama.cpp symbols edgert uses ({', '.join(missing[:5])}"
            f"{', ...' if len(missing) > 5 else ''}); edgert supports {supported_range()}: "
            f"pip install '{supported_range()}'")


def _llama_cpp():
    """Import llama_cpp, check its symbols, and route llama.cpp's own log lines to Python
    logging, not stderr."""
    global _log_callback
    try:
        import llama_cpp
    except ImportError:
        raise BackendUnavailableError(
            "llama.cpp runner unavailable: expected the llama-cpp-python package (an edgert dependency), "
            "found it missing; reinstall edgert") from None
    if _log_callback is None:
        check_symbols(llama_cpp)

        def forward(level: int, text: bytes, _user_data) -> None:
            global _last_level
            if level != GGML_LOG_CONT:
                _last_level = GGML_LOG_LEVELS.get(level, logging.DEBUG)
            message = text.decode("utf-8", errors="replace").rstrip()
            if message:
                log.log(_last_level, "%s", message)

        _log_callback = llama_cpp.llama_log_callback(forward)
        llama_cpp.llama_log_set(_log_callback, None)
    return llama_cpp


def gpu_offload_supported() -> bool:
    """Whether this llama-cpp-python build can offload layers to a GPU."""
    try:
        return bool(_llama_cpp().llama_supports_gpu_offload())
    except EdgertError:
        return False


class LlamaCppRunner(Runner):
    """Runs GGUF models with llama.cpp on the CPU (or a GPU build of llama-cpp-python)."""

    format = "gguf"

    def __init__(self, model_path, *, n_gpu_layers: Optional[int] = None, n_seq_max: int = N_SEQ_MAX, **kwargs):
        """n_gpu_layers: layers to offload; None offloads all when the build supports a GPU."""
        super().__init__(model_path, **kwargs)
        if not 1 <= n_seq_max <= 64:
            raise UsageError(f"n_seq_max must be within 1..64, found {n_seq_max}")
        self.n_gpu_layers = n_gpu_layers
        self.n_seq_max = n_seq_max

    # ------------------------------------------------------------- lifecycle
    def _load_impl(self) -> None:
        header = read_header(self.model_path)  # refuse malformed files before llama.cpp parses them
        self._header_template = header.chat_template
        lib = _llama_cpp()
        self._lib = lib
        lib.llama_backend_init()
        model_params = lib.llama_model_default_params()
        gpu_layers = self.n_gpu_layers
        if gpu_layers is None:
            gpu_layers = -1 if lib.llama_supports_gpu_offload() else 0
        model_params.n_gpu_layers = gpu_layers
        self._model = lib.llama_model_load_from_file(str(self.model_path).encode(), model_params)
        if not self._model:
            raise ModelFileError(f"llama.cpp could not load {self.model_path} (unsupported architecture or corrupt tensors)")
        threads = self.n_threads or 1
        self._n_batch = min(N_BATCH, self.n_ctx)
        params = lib.llama_context_default_params()
        params.n_ctx = self.n_ctx
        params.n_batch = self._n_batch
        params.n_ubatch = self._n_batch
        params.n_seq_max = self.n_seq_max
        params.kv_unified = True  # sequences share one cache, so a prompt copied to N sequences is stored once
        params.n_threads = threads
        params.n_threads_batch = threads
        params.no_perf = True
        self._ctx = lib.llama_init_from_model(self._model, params)
        if not self._ctx:
            lib.llama_model_free(self._model)
            raise ModelFileError(f"llama.cpp could not create a context of {self.n_ctx} tokens for {self.model_path}")
        self._vocab = lib.llama_model_get_vocab(self._model)
        self._n_vocab = lib.llama_vocab_n_tokens(self._vocab)
        self._batch = lib.llama_batch_init(self._n_batch, 0, self.n_seq_max)
        self._memory = lib.llama_get_memory(self._ctx)
        self._piece_buf = ctypes.create_string_buffer(256)
        self._abort_check: Optional[Callable[[], bool]] = None
        # keep a reference: llama.cpp holds only the raw function pointer
        self._abort_fn = lib.ggml_abort_callback(self._on_abort_poll)
        self._no_abort = lib.ggml_abort_callback()
        self._pos = 0
        self._filler_len = 0  # length of filler context left in the cache by a measurement
        self._cached: List[int] = []  # the tokens sequence 0 holds in the cache (prefix reuse)

    def _close_impl(self) -> None:
        lib = self._lib
        lib.llama_batch_free(self._batch)
        lib.llama_free(self._ctx)
        lib.llama_model_free(self._model)
        self._ctx = self._model = None

    def _on_abort_poll(self, _data) -> bool:
        check = self._abort_check
        return bool(check is not None and check())

    # ----------------------------------------------------------------- tokens
    def _tokenize_impl(self, text: str) -> List[int]:
        raw = text.encode("utf-8")
        capacity = len(raw) + 8
        buffer = (self._lib.llama_token * capacity)()
        n = self._lib.llama_tokenize(self._vocab, raw, len(raw), buffer, capacity, True, True)
        if n < 0:
            capacity = -n
            buffer = (self._lib.llama_token * capacity)()
            n = self._lib.llama_tokenize(self._vocab, raw, len(raw), buffer, capacity, True, True)
        return self._strip_double_bos(list(buffer[:n]), self._lib.llama_vocab_bos(self._vocab))

    def _piece(self, token: int, special: bool) -> bytes:
        buf = self._piece_buf
        n = self._lib.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._lib.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def _detokenize_impl(self, ids: Sequence[int]) -> bytes:
        return b"".join(self._piece(token, special=False) for token in ids)

    def _bos_id_impl(self) -> Optional[int]:
        bos = self._lib.llama_vocab_bos(self._vocab)
        return bos if bos >= 0 else None

    @property
    def max_parallel(self) -> int:
        return self.n_seq_max

    def _is_end_impl(self, token: int) -> bool:
        return bool(self._lib.llama_vocab_is_eog(self._vocab, token))

    def _model_chat_template(self) -> Optional[str]:
        return self._header_template

    def _guide_impl(self) -> Guide:
        lib = self._lib
        ends = [t for t in range(self._n_vocab) if lib.llama_vocab_is_eog(self._vocab, t)]
        return Guide.from_llama_vocab(self._vocab, self._n_vocab, ends)

    def _special_token_texts(self) -> tuple:
        def text(token: int) -> str:
            return self._piece(token, special=True).decode("utf-8", errors="replace") if token >= 0 else ""

        return text(self._lib.llama_vocab_bos(self._vocab)), text(self._lib.llama_vocab_eos(self._vocab))

    # ------------------------------------------------------------- evaluation
    def _decode(self, tokens: Sequence[int], positions: Sequence[int], seqs: Sequence[int], logits: Sequence[bool]) -> None:
        batch = self._batch
        batch.n_tokens = len(tokens)
        for i, token in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = positions[i]
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seqs[i]
            batch.logits[i] = logits[i]
        code = self._lib.llama_decode(self._ctx, batch)
        if code == DECODE_ABORTED:
            raise _Aborted()
        if code != DECODE_OK:
            raise GenerationError(f"llama_decode failed with code {code} at position {positions[0]}")

    def _logits(self, index: int = -1) -> np.ndarray:
        pointer = self._lib.llama_get_logits_ith(self._ctx, index)
        return np.ctypeslib.as_array(pointer, shape=(self._n_vocab,)).copy()

    def _evaluate_prompt(self, ids: Sequence[int], should_abort: Optional[Callable[[], bool]], keep: int = 0) -> int:
        """Evaluate ``ids`` as sequence 0, in chunks of n_batch, reusing the first ``keep``
        tokens already in the cache (0 clears it)."""
        self._cached = []
        if keep:
            for seq in range(1, self.n_seq_max):
                self._lib.llama_memory_seq_rm(self._memory, seq, -1, -1)
            if not self._lib.llama_memory_seq_rm(self._memory, 0, keep, -1):
                keep = 0  # the cache cannot drop a partial sequence (sliding-window layers)
        if not keep:
            self._lib.llama_memory_clear(self._memory, True)
        self._pos = keep
        if should_abort is not None:
            self._abort_check = should_abort
            self._lib.llama_set_abort_callback(self._ctx, self._abort_fn, None)
        done = keep  # tokens of ids the cache holds
        try:
            for start in range(keep, len(ids), self._n_batch):
                if should_abort is not None and should_abort():
                    raise _Aborted()
                chunk = ids[start : start + self._n_batch]
                last = start + len(chunk) == len(ids)
                n = len(chunk)
                self._decode(chunk, range(start, start + n), [0] * n, [False] * (n - 1) + [last])
                done = start + n
        except _Aborted:
            # keep what was evaluated before the cut (a control loop's fixed prefix, say), so
            # that one cut request does not make the next evaluate everything again
            if done and self._lib.llama_memory_seq_rm(self._memory, 0, done, -1):
                self._cached, self._pos = list(ids[:done]), done
            else:
                self._lib.llama_memory_clear(self._memory, True)
                self._cached, self._pos = [], 0
            raise
        finally:
            if should_abort is not None:
                # steps are checked between tokens; polling Python from every graph node
                # during decoding would cost speed for nothing
                self._lib.llama_set_abort_callback(self._ctx, self._no_abort, None)
                self._abort_check = None
        self._pos = len(ids)
        self._cached = list(ids)
        return keep

    def _prefill_impl(self, ids: List[int], should_abort: Callable[[], bool]) -> np.ndarray:
        """Evaluate a prompt; the part it shares with what the cache holds is not evaluated
        again (a strategy that extends its own output, a repeated system prompt)."""
        self._filler_len = 0
        keep = 0
        for cached, new in zip(self._cached, ids):
            if cached != new:
                break
            keep += 1
        keep = min(keep, len(ids) - 1)  # the last prompt token is evaluated for its logits
        self._prefix_hit = keep  # what a cut evaluation reports too
        self._prefix_hit = self._evaluate_prompt(ids, should_abort, keep)
        return self._logits()

    def _decode_impl(self, token: int, should_abort: Callable[[], bool]) -> np.ndarray:
        self._decode([token], [self._pos], [0], [True])
        self._pos += 1
        self._cached.append(token)
        return self._logits()

    def _set_threads_impl(self, n_threads: int) -> None:
        self._lib.llama_set_n_threads(self._ctx, n_threads, n_threads)

    def _forget_cache_impl(self) -> None:
        self._cached = []

    def _fork_impl(self, n: int) -> None:
        for seq in range(1, n):
            self._lib.llama_memory_seq_cp(self._memory, 0, seq, -1, -1)

    def _decode_batch_impl(self, tokens: List[int], seqs: List[int], position: int) -> np.ndarray:
        self._decode(tokens, [position] * len(tokens), seqs, [True] * len(tokens))
        if seqs[0] == 0:  # the cache keeps sequence 0's own tokens for prefix reuse
            self._cached.append(tokens[0])
            self._pos = position + 1
        return np.stack([self._logits(i) for i in range(len(tokens))])

    def _logits_for_impl(self, ids: List[int]) -> np.ndarray:
        self._lib.llama_memory_clear(self._memory, True)
        self._filler_len = 0
        self._cached = []
        rows = []
        for start in range(0, len(ids), self._n_batch):
            chunk = ids[start : start + self._n_batch]
            n = len(chunk)
            self._decode(chunk, range(start, start + n), [0] * n, [True] * n)
            rows.extend(self._logits(i) for i in range(n))
        self._pos = len(ids)
        return np.stack(rows)

    # ------------------------------------------------------------ measurement
    def _measure_prefill_impl(self, n_tokens: int) -> float:
        ids = self._filler_ids(n_tokens)
        self._filler_len = 0
        start = time.perf_counter()
        self._evaluate_prompt(ids, None)
        self._logits()
        elapsed_ms = (time.perf_counter() - start) * 1000
        self._filler_len = n_tokens  # a following decode measurement at this context reuses the cache
        return elapsed_ms

    def _measure_decode_impl(self, context_len: int, batch: int, steps: int) -> List[float]:
        if batch > self.n_seq_max:
            raise UsageError(f"batch {batch} exceeds the runner's n_seq_max of {self.n_seq_max}")
        if getattr(self, "_filler_len", 0) == context_len:
            # keep the evaluated context, drop what earlier measurements appended
            self._lib.llama_memory_seq_rm(self._memory, 0, context_len, -1)
            for seq in range(1, self.n_seq_max):
                self._lib.llama_memory_seq_rm(self._memory, seq, -1, -1)
        else:
            self._filler_len = 0
            self._evaluate_prompt(self._filler_ids(context_len), None)
            self._filler_len = context_len
        self._cached = []
        for seq in range(1, batch):
            self._lib.llama_memory_seq_cp(self._memory, 0, seq, -1, -1)
        token = self._filler_ids(1)[0]
        times = []
        for step in range(steps):
            pos = context_len + step
            start = time.perf_counter()
            self._decode([token] * batch, [pos] * batch, list(range(batch)), [True] * batch)
            for i in range(batch):
                self._logits(i)
            times.append((time.perf_counter() - start) * 1000)
        return times

