"""The llama.cpp runner, through llama-cpp-python.

``llama_cpp.Llama`` loads the model and context; evaluation uses llama.cpp's own C API
(``llama_decode`` on a ``llama_batch``, ``llama_get_logits_ith``) so edgert controls every
step: it times each one, samples itself, and installs llama.cpp's abort callback while
the prompt is evaluated so a long prefill stops at the deadline instead of after it.
"""

from __future__ import annotations

import logging
from typing import Callable, List, Optional, Sequence

import numpy as np

from ..errors import GenerationError, ModelFileError, unavailable
from .base import Runner, _Aborted

N_BATCH = 512

# llama_decode return codes (llama.h)
DECODE_OK, DECODE_NO_KV_SLOT, DECODE_ABORTED = 0, 1, 2


# ggml_log_level (ggml.h): NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5 (continues a line)
GGML_LOG_LEVELS = {0: logging.CRITICAL, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}
GGML_LOG_CONT = 5
log = logging.getLogger("edgert.llama_cpp")
log.addHandler(logging.NullHandler())
_log_callback = None
_last_level = logging.DEBUG


def _llama_cpp():
    """Import llama_cpp and route llama.cpp's own log lines to Python logging, not stderr."""
    global _log_callback
    try:
        import llama_cpp
    except ImportError:
        raise unavailable("llama.cpp runner (llama-cpp-python)", "llama") from None
    if _log_callback is None:

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


class LlamaCppRunner(Runner):
    """Runs GGUF models with llama.cpp on the CPU (or a GPU build of llama-cpp-python)."""

    format = "gguf"

    def __init__(self, model_path, *, n_gpu_layers: Optional[int] = None, **kwargs):
        """n_gpu_layers: layers to offload; None offloads all when the build supports a GPU."""
        super().__init__(model_path, **kwargs)
        self.n_gpu_layers = n_gpu_layers

    def _load_impl(self) -> None:
        from ..formats.gguf import read_header

        read_header(self.model_path)  # refuse malformed files before llama.cpp parses them
        lib = _llama_cpp()
        self._lib = lib
        gpu_layers = self.n_gpu_layers
        if gpu_layers is None:
            gpu_layers = -1 if lib.llama_supports_gpu_offload() else 0
        try:
            self._llm = lib.Llama(
                model_path=str(self.model_path),
                n_ctx=self.n_ctx,
                n_gpu_layers=gpu_layers,
                n_batch=min(N_BATCH, self.n_ctx),
                n_threads=self.n_threads,
                n_threads_batch=self.n_threads,
                logits_all=False,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise ModelFileError(f"llama.cpp could not load {self.model_path}: {exc}") from None
        self._ctx = self._llm.ctx
        self._vocab = lib.llama_model_get_vocab(self._llm.model)
        self._n_vocab = self._llm.n_vocab()
        self._n_batch = min(N_BATCH, self.n_ctx)
        self._batch = lib.llama_batch_init(self._n_batch, 0, 1)
        self._abort_check: Optional[Callable[[], bool]] = None
        # keep a reference: llama.cpp holds only the raw function pointer
        self._abort_fn = lib.ggml_abort_callback(self._on_abort_poll)

    def _close_impl(self) -> None:
        self._lib.llama_batch_free(self._batch)
        self._llm.close()
        del self._llm

    def _on_abort_poll(self, _data) -> bool:
        check = self._abort_check
        return bool(check is not None and check())

    # ----------------------------------------------------------------- tokens
    def _tokenize_impl(self, text: str) -> List[int]:
        ids = self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
        bos = self._llm.token_bos()
        if len(ids) >= 2 and ids[0] == bos and ids[1] == bos:
            ids = ids[1:]  # the template wrote BOS itself and llama.cpp added another
        return ids

    def _detokenize_impl(self, ids: Sequence[int]) -> bytes:
        return self._llm.detokenize(list(ids), special=False)

    def _is_end_impl(self, token: int) -> bool:
        return bool(self._lib.llama_vocab_is_eog(self._vocab, token))

    def _model_chat_template(self) -> Optional[str]:
        return self._llm.metadata.get("tokenizer.chat_template")

    def _special_token_texts(self) -> tuple:
        def text(token: int) -> str:
            if token < 0:
                return ""
            return self._llm.detokenize([token], special=True).decode("utf-8", errors="replace")

        return text(self._llm.token_bos()), text(self._llm.token_eos())

    # ------------------------------------------------------------- evaluation
    def _decode(self, ids: Sequence[int], start_pos: int, want_logits: bool) -> None:
        batch = self._batch
        n = len(ids)
        batch.n_tokens = n
        for i, token in enumerate(ids):
            batch.token[i] = token
            batch.pos[i] = start_pos + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = False
        batch.logits[n - 1] = want_logits
        code = self._lib.llama_decode(self._ctx, batch)
        if code == DECODE_ABORTED:
            raise _Aborted()
        if code != DECODE_OK:
            raise GenerationError(f"llama_decode failed with code {code} at position {start_pos}")

    def _logits(self) -> np.ndarray:
        pointer = self._lib.llama_get_logits_ith(self._ctx, -1)
        return np.ctypeslib.as_array(pointer, shape=(self._n_vocab,)).copy()

    def _prefill_impl(self, ids: List[int], should_abort: Callable[[], bool]) -> np.ndarray:
        self._lib.llama_memory_clear(self._lib.llama_get_memory(self._ctx), True)
        self._pos = 0
        self._abort_check = should_abort
        self._lib.llama_set_abort_callback(self._ctx, self._abort_fn, None)
        try:
            for start in range(0, len(ids), self._n_batch):
                if should_abort():
                    raise _Aborted()
                chunk = ids[start : start + self._n_batch]
                self._decode(chunk, start, want_logits=start + len(chunk) == len(ids))
        finally:
            # per-token steps are checked between tokens; polling Python from every
            # graph node would cost decode speed for nothing
            self._lib.llama_set_abort_callback(self._ctx, self._lib.ggml_abort_callback(), None)
            self._abort_check = None
        self._pos = len(ids)
        return self._logits()

    def _decode_impl(self, token: int, should_abort: Callable[[], bool]) -> np.ndarray:
        self._decode([token], self._pos, want_logits=True)
        self._pos += 1
        return self._logits()
