"""The TensorRT runner: decoder engines (ONNX with KV cache -> TensorRT) on NVIDIA GPUs and Jetson.

Engines are executable artifacts: a TensorRT plan can carry kernels and plugins that run on
the GPU. Give the runner only a path returned by ``Bundle.artifact()`` (sha256 checked
against the manifest) and the engine's recorded compatibility key
(``variant`` manifest metadata ``engine``); the runner compares that key with this device
*before* TensorRT deserializes a single byte and refuses a mismatched engine.

The compatibility key and its check live in ``edgert.formats.tensorrt`` (the converter
records the key, the runner checks it); the tokenizer is ``runners.hf_tokenizer``.

Imports of ``tensorrt`` and CUDA (``cuda-python``: ``cuda.bindings.runtime``, or the older
``cuda.cudart``) are lazy: importing this module needs neither.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..devices.cuda import CudaRuntime
from ..errors import GenerationError, ModelFileError, unavailable
from ..formats import optimum
from ..formats.tensorrt import check_engine_compatible, compatibility_key
from .base import Runner, _Aborted
from .guidance import Guide
from .hf_tokenizer import HfTokenizer

log = logging.getLogger("edgert.tensorrt")
log.addHandler(logging.NullHandler())

PREFILL_CHUNK = 256  # tokens per engine call during prefill; bounds the logits buffer


def _import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError:
        raise unavailable("TensorRT runner (tensorrt)", "gpu") from None
    return tensorrt


def make_logger(trt: Any) -> Any:
    """A ``trt.ILogger`` that routes TensorRT's messages to Python logging (the library never prints)
    and keeps the last errors for edgert's messages."""

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: List[str] = []

        def log(self, severity, message) -> None:
            text = str(message)
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors = (self.errors + [text])[-5:]
                log.error("%s", text)
            elif severity == trt.ILogger.Severity.WARNING:
                log.warning("%s", text)
            else:
                log.debug("%s", text)

    return _Logger()


# ------------------------------------------------------------------------- runner
class TensorRTRunner(Runner):
    """Generates text with a TensorRT decoder engine (optimum's ONNX export with KV cache).

    ``model_path`` must come from ``Bundle.artifact()`` (hash checked). ``engine_key`` is the
    compatibility key recorded in the variant's manifest metadata; loading refuses the engine
    when it does not match this device (``device_key`` overrides the detected one, for tests).
    The tokenizer files are read from ``tokenizer_dir`` (default: the engine's directory).
    """

    format = "tensorrt"

    def __init__(
        self,
        model_path,
        *,
        engine_key: Optional[Mapping[str, Any]] = None,
        device_key: Optional[Mapping[str, Any]] = None,
        tokenizer_dir: Optional[Path] = None,
        **kwargs,
    ):
        super().__init__(model_path, **kwargs)
        self.engine_key = dict(engine_key) if engine_key else None
        self.device_key = dict(device_key) if device_key else None
        self.tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir else self.model_path.parent

    # ------------------------------------------------------------- lifecycle
    def _load_impl(self) -> None:
        current = self.device_key or compatibility_key()
        check_engine_compatible(self.engine_key, current)  # before TensorRT sees the bytes
        self._tok = HfTokenizer(self.tokenizer_dir)
        trt = _import_tensorrt()
        cuda = CudaRuntime.load()
        self._trt, self._cuda = trt, cuda
        self._logger = make_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        engine = self._runtime.deserialize_cuda_engine(self.model_path.read_bytes())
        if engine is None:
            detail = "; ".join(self._logger.errors) or "see the TensorRT log"
            raise ModelFileError(f"TensorRT could not deserialize {self.model_path.name}: {detail}")
        self._engine = engine
        self._context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if optimum.INPUT_IDS not in inputs or optimum.LOGITS not in outputs:
            raise ModelFileError(
                f"{self.model_path.name}: expected a decoder engine with input 'input_ids' and output 'logits' "
                f"(optimum text-generation-with-past export); found inputs {inputs} and outputs {outputs}"
            )
        self._past = sorted((n for n in inputs if optimum.past_layer(n)), key=lambda n: (optimum.past_layer(n)[0], n))
        if not self._past:
            raise ModelFileError(f"{self.model_path.name}: the engine has no KV-cache inputs (past_key_values.*)")
        self._present = {n: optimum.present_for(n) for n in self._past}
        missing = [p for p in self._present.values() if p not in outputs]
        if missing:
            raise ModelFileError(f"{self.model_path.name}: KV-cache outputs {missing} are missing")
        self._inputs = inputs
        self._dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        mask_max = (engine.get_tensor_profile_shape(optimum.ATTENTION_MASK, 0)[2]
                    if optimum.ATTENTION_MASK in inputs else None)
        if mask_max is not None:
            self.n_ctx = min(self.n_ctx, int(mask_max[-1]))
        self._vocab = int(engine.get_tensor_shape(optimum.LOGITS)[-1])
        self._stream = cuda.stream()
        self._buffers: List[int] = []
        self._token_buffers = {n: self._alloc(self.n_ctx * self._dtypes[n].itemsize)
                               for n in optimum.TOKEN_INPUTS if n in inputs}
        self._chunk = min(PREFILL_CHUNK, self.n_ctx)
        self._logits_buffer = self._alloc(self._chunk * self._vocab * self._dtypes[optimum.LOGITS].itemsize)
        self._kv_shape: Dict[str, Tuple[int, int]] = {}
        self._kv = [{}, {}]  # ping-pong: past is read from one set, present written to the other
        for name in self._past:
            shape = engine.get_tensor_shape(name)  # [batch, heads, past, head_dim]
            heads, head_dim = int(shape[1]), int(shape[3])
            self._kv_shape[name] = (heads, head_dim)
            for side in self._kv:
                side[name] = self._alloc(heads * self.n_ctx * head_dim * self._dtypes[name].itemsize)
        self._pos = 0

    def _alloc(self, nbytes: int) -> int:
        pointer = self._cuda.malloc(nbytes)
        self._buffers.append(pointer)
        return pointer

    def _close_impl(self) -> None:
        for pointer in self._buffers:
            self._cuda.free(pointer)
        self._buffers = []
        self._cuda.destroy_stream(self._stream)
        self._context = self._engine = self._runtime = None

    # ----------------------------------------------------------------- tokens
    def _tokenize_impl(self, text: str) -> List[int]:
        return self._strip_double_bos(self._tok.encode(text), self._tok.bos_id)

    def _detokenize_impl(self, ids: Sequence[int]) -> bytes:
        return self._tok(ids)

    def _is_end_impl(self, token: int) -> bool:
        return token in self._tok.end_ids

    def _guide_impl(self) -> Guide:
        return self._tok.guide(self._vocab)

    def _model_chat_template(self) -> Optional[str]:
        return self._tok.chat_template

    def _special_token_texts(self) -> tuple:
        return self._tok.bos_text, self._tok.eos_text

    # ------------------------------------------------------------- evaluation
    def _run(self, ids: Sequence[int], all_positions: bool) -> np.ndarray:
        """Evaluate ``ids`` after the cached ``self._pos`` tokens; return logits
        ([len(ids), vocab] or the last row)."""
        n, past = len(ids), self._pos
        if past + n > self.n_ctx:
            raise GenerationError(f"context full: {past} + {n} tokens exceed {self.n_ctx}")
        ctx, cuda, stream = self._context, self._cuda, self._stream
        feeds = {optimum.INPUT_IDS: np.asarray([ids]),
                 optimum.ATTENTION_MASK: np.ones((1, past + n)),
                 optimum.POSITION_IDS: np.arange(past, past + n)[None, :]}
        for name, pointer in self._token_buffers.items():
            array = feeds[name].astype(self._dtypes[name])
            ctx.set_input_shape(name, array.shape)
            cuda.to_device(pointer, array, stream)
            ctx.set_tensor_address(name, pointer)
        read, write = self._kv[0], self._kv[1]
        for name in self._past:
            heads, head_dim = self._kv_shape[name]
            ctx.set_input_shape(name, (1, heads, past, head_dim))
            ctx.set_tensor_address(name, read[name])
            ctx.set_tensor_address(self._present[name], write[name])
        ctx.set_tensor_address(optimum.LOGITS, self._logits_buffer)
        if not ctx.execute_async_v3(stream):
            detail = "; ".join(self._logger.errors) or "see the TensorRT log"
            raise GenerationError(f"TensorRT execution failed at position {past}: {detail}")
        rows = n if all_positions else 1
        host = np.empty((rows, self._vocab), dtype=self._dtypes[optimum.LOGITS])
        offset = 0 if all_positions else (n - 1) * self._vocab * host.itemsize
        cuda.to_host(host, self._logits_buffer + offset, stream)
        cuda.synchronize(stream)
        self._kv.reverse()
        self._pos = past + n
        return host.astype(np.float32)

    def _evaluate(self, ids: Sequence[int], should_abort: Optional[Callable[[], bool]], all_positions: bool) -> np.ndarray:
        self._pos = 0
        rows = []
        for start in range(0, len(ids), self._chunk):
            if should_abort is not None and should_abort():
                raise _Aborted()
            rows.append(self._run(ids[start : start + self._chunk], all_positions))
        return np.concatenate(rows) if all_positions else rows[-1][0]

    def _prefill_impl(self, ids: List[int], should_abort: Callable[[], bool]) -> np.ndarray:
        return self._evaluate(ids, should_abort, all_positions=False)

    def _decode_impl(self, token: int, should_abort: Callable[[], bool]) -> np.ndarray:
        return self._run([token], all_positions=False)[0]

    def _logits_for_impl(self, ids: List[int]) -> np.ndarray:
        return self._evaluate(ids, None, all_positions=True)

    def _measure_prefill_impl(self, n_tokens: int) -> float:
        ids = self._filler_ids(n_tokens)
        start = time.perf_counter()
        self._evaluate(ids, None, all_positions=False)
        return (time.perf_counter() - start) * 1000
