"""The ONNX Runtime runner: decoder LLMs exported with a KV cache, on onnxruntime + numpy.

It runs what ``edgert convert --to onnx`` (optimum's ``text-generation-with-past`` export)
writes: one graph that takes ``input_ids``, ``attention_mask``, optionally ``position_ids``
and ``past_key_values.N.key/value``, and returns ``logits`` and ``present.N.key/value``,
which are fed back as the next step's past. Tokenization uses the ``tokenizers`` package
on ``tokenizer.json``; neither torch nor transformers is imported, so the embeddable
library stays light. The files next to ``model.onnx`` give the rest: chat template
(``tokenizer_config.json`` or ``chat_template.jinja``), end-of-generation ids
(``generation_config.json``, ``config.json``).

A prompt is evaluated in one run; the deadline reaches inside it through ONNX Runtime's
``RunOptions.terminate``, set from a watchdog thread, so a long prefill stops at the
deadline instead of after it.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import BackendUnavailableError, GenerationError, ModelFileError
from ..formats.onnx import check_external_data
from ..version import distribution_version
from ..formats.optimum import ATTENTION_MASK, INPUT_IDS, LOGITS, PAST_NAME, POSITION_IDS, PRESENT_OUTPUT, past_layer
from .base import Runner, _Aborted
from .guidance import Guide
from .hf_tokenizer import HfTokenizer

# ONNX tensor type strings -> numpy dtypes (onnx.TensorProto element types as ORT names them)
ORT_DTYPES: Dict[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}

WATCHDOG_POLL_S = 0.002

#: the wheels that ship the one ``onnxruntime`` module; two in one environment overwrite each
#: other's files, and whichever was installed last wins
ORT_WHEELS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino", "onnxruntime-qnn")


def installed_ort_wheels(version_of: Callable[[str], Optional[str]] = distribution_version) -> Dict[str, str]:
    """The ONNX Runtime wheels installed in this environment, with their versions."""
    return {name: v for name in ORT_WHEELS for v in [version_of(name)] if v}


def wheel_conflict(wheels: Dict[str, str]) -> Optional[Tuple[str, str]]:
    """(the problem, the fix) when more than one ONNX Runtime wheel is installed, else None."""
    if len(wheels) < 2:
        return None
    listed = ", ".join(f"{name} {version}" for name, version in wheels.items())
    keep = next((name for name in wheels if name != "onnxruntime"), "onnxruntime")
    return (f"{len(wheels)} ONNX Runtime wheels share one module here ({listed}): whichever was installed last wins",
            f"pip uninstall -y {' '.join(wheels)} && pip install {keep}")


def _ort():
    conflict = wheel_conflict(installed_ort_wheels())
    if conflict:
        raise BackendUnavailableError(f"ONNX Runtime runner unavailable: {conflict[0]}; fix: {conflict[1]}")
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailableError(
            "ONNX Runtime runner unavailable: expected the onnxruntime package (an edgert dependency; "
            "onnxruntime-gpu with edgert[gpu]), found neither; reinstall edgert") from None
    return onnxruntime


class OnnxRuntimeRunner(Runner):
    """Runs decoder LLMs exported to ONNX (with KV cache) on ONNX Runtime."""

    format = "onnx"

    def __init__(self, model_path, *, providers: Optional[Sequence[str]] = None, **kwargs):
        """providers: ONNX Runtime execution providers, default CPU only."""
        super().__init__(model_path, **kwargs)
        self.providers = list(providers) if providers else ["CPUExecutionProvider"]

    # ------------------------------------------------------------- lifecycle
    def _load_impl(self) -> None:
        ort = _ort()
        path = self.model_path
        if not path.is_file():
            raise ModelFileError(f"ONNX model not found: {path}")
        folder = path.parent
        check_external_data(path)  # before ONNX Runtime opens any file the model names
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.n_threads:
            options.intra_op_num_threads = self.n_threads
            options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(str(path), options, providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            raise ModelFileError(f"ONNX Runtime could not load {path}: {exc}") from None
        self._ort = ort
        self._read_interface()
        self._tok = HfTokenizer(folder)
        self._reset()

    def _read_interface(self) -> None:
        inputs = {i.name: i for i in self._session.get_inputs()}
        outputs = {o.name for o in self._session.get_outputs()}
        missing = [n for n in (INPUT_IDS,) if n not in inputs] + [n for n in (LOGITS,) if n not in outputs]
        if missing:
            raise ModelFileError(
                f"{self.model_path}: expected a decoder LLM graph with inputs input_ids[, attention_mask, "
                f"position_ids, past_key_values.N.key/value] and output logits; missing {missing}"
            )
        past: Dict[Tuple[int, str], Any] = {}
        for name, info in inputs.items():
            layer = past_layer(name)
            if layer:
                past[layer] = info
        if not past:
            raise ModelFileError(
                f"{self.model_path}: the graph has no past_key_values inputs; export it with KV cache "
                "(optimum task text-generation-with-past, as `edgert convert --to onnx` does)"
            )
        self._layers = sorted({layer for layer, _ in past})
        self._past_names = [PAST_NAME.format(layer=layer, kind=kind) for layer in self._layers for kind in ("key", "value")]
        self._present_names = [PRESENT_OUTPUT.format(layer=layer, kind=kind) for layer in self._layers for kind in ("key", "value")]
        absent = [n for n in self._present_names if n not in outputs]
        if absent:
            raise ModelFileError(f"{self.model_path}: past inputs without matching outputs {absent[:4]}")
        first = past[(self._layers[0], "key")]
        self._kv_dtype = ORT_DTYPES.get(first.type, np.float32)
        self._kv_shapes = {}
        for (layer, kind), info in past.items():
            shape = list(info.shape)
            if len(shape) != 4 or not all(isinstance(d, int) for d in (shape[1], shape[3])):
                raise ModelFileError(f"{self.model_path}: {info.name} has shape {shape}; expected [batch, heads, past, head_dim]")
            self._kv_shapes[PAST_NAME.format(layer=layer, kind=kind)] = (shape[1], shape[3])
        self._has_mask = ATTENTION_MASK in inputs
        self._has_positions = POSITION_IDS in inputs
        self._id_dtype = ORT_DTYPES.get(inputs[INPUT_IDS].type, np.int64)
        self._output_names = [LOGITS] + self._present_names

    def _close_impl(self) -> None:
        self._session = None
        self._past = None

    def _reset(self) -> None:
        self._past = {name: np.zeros((1, heads, 0, dim), dtype=self._kv_dtype) for name, (heads, dim) in self._kv_shapes.items()}
        self._pos = 0

    # ----------------------------------------------------------------- tokens
    def _tokenize_impl(self, text: str) -> List[int]:
        return self._strip_double_bos(self._tok.encode(text), self._tok.bos_id)

    def _detokenize_impl(self, ids: Sequence[int]) -> bytes:
        return self._tok(ids)

    def _is_end_impl(self, token: int) -> bool:
        return token in self._tok.end_ids

    def _guide_impl(self) -> Guide:
        return self._tok.guide()

    def _model_chat_template(self) -> Optional[str]:
        return self._tok.chat_template

    def _special_token_texts(self) -> tuple:
        return self._tok.bos_text, self._tok.eos_text

    # ------------------------------------------------------------- evaluation
    def _feeds(self, ids: np.ndarray, past: Dict[str, np.ndarray], past_len: int) -> Dict[str, np.ndarray]:
        batch, n = ids.shape
        feeds: Dict[str, np.ndarray] = {INPUT_IDS: ids.astype(self._id_dtype, copy=False)}
        if self._has_mask:
            feeds[ATTENTION_MASK] = np.ones((batch, past_len + n), dtype=np.int64)
        if self._has_positions:
            feeds[POSITION_IDS] = np.broadcast_to(np.arange(past_len, past_len + n, dtype=np.int64), (batch, n)).copy()
        feeds.update(past)
        return feeds

    def _run(self, feeds: Dict[str, np.ndarray], should_abort: Optional[Callable[[], bool]] = None):
        """One session run; returns (logits, present dict). A watchdog terminates it on abort."""
        options = self._ort.RunOptions()
        done = threading.Event()
        watchdog = None
        if should_abort is not None:

            def watch() -> None:
                while not done.wait(WATCHDOG_POLL_S):
                    if should_abort():
                        options.terminate = True
                        return

            watchdog = threading.Thread(target=watch, name="edgert-ort-watchdog", daemon=True)
            watchdog.start()
        try:
            outputs = self._session.run(self._output_names, feeds, options)
        except Exception as exc:  # onnxruntime's pybind exception types (Fail, RuntimeException)
            if options.terminate:
                raise _Aborted() from None
            raise GenerationError(f"ONNX Runtime failed at position {self._pos}: {exc}") from None
        finally:
            done.set()
            if watchdog is not None:
                watchdog.join()
        present = dict(zip(self._past_names, outputs[1:]))
        return outputs[0], present

    def _prefill_impl(self, ids: List[int], should_abort: Callable[[], bool]) -> np.ndarray:
        self._reset()
        logits, present = self._run(self._feeds(np.asarray([ids]), self._past, 0), should_abort)
        self._past, self._pos = present, len(ids)
        return logits[0, -1].astype(np.float32, copy=False)

    def _decode_impl(self, token: int, should_abort: Callable[[], bool]) -> np.ndarray:
        logits, present = self._run(self._feeds(np.asarray([[token]]), self._past, self._pos))
        self._past = present
        self._pos += 1
        return logits[0, -1].astype(np.float32, copy=False)

    def _logits_for_impl(self, ids: List[int]) -> np.ndarray:
        self._reset()
        logits, _ = self._run(self._feeds(np.asarray([ids]), self._past, 0))
        return logits[0].astype(np.float32, copy=False)

    # ------------------------------------------------------------ measurement
    def _measure_prefill_impl(self, n_tokens: int) -> float:
        ids = self._filler_ids(n_tokens)
        self._reset()
        start = time.perf_counter()
        _, present = self._run(self._feeds(np.asarray([ids]), self._past, 0))
        elapsed_ms = (time.perf_counter() - start) * 1000
        self._past, self._pos = present, n_tokens
        return elapsed_ms

    def _measure_decode_impl(self, context_len: int, batch: int, steps: int) -> List[float]:
        if self._pos != context_len:
            self._measure_prefill_impl(context_len)
        past = {name: np.repeat(value[:, :, :context_len], batch, axis=0) for name, value in self._past.items()}
        token = np.full((batch, 1), self._filler_ids(1)[0], dtype=np.int64)
        times = []
        for step in range(steps):
            start = time.perf_counter()
            _, past = self._run(self._feeds(token, past, context_len + step))
            times.append((time.perf_counter() - start) * 1000)
        return times

