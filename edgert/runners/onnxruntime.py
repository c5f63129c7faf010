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

import json
import math
import os
import re
import stat
import threading
import time
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import GenerationError, ModelFileError, unavailable
from .base import Runner, _Aborted

# Graph interface of optimum's decoder export with past (optimum.exporters.onnx, TextDecoderOnnxConfig)
INPUT_IDS, ATTENTION_MASK, POSITION_IDS, LOGITS = "input_ids", "attention_mask", "position_ids", "logits"
PAST_INPUT = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")
PRESENT_OUTPUT = "present.{layer}.{kind}"

# ONNX tensor type strings -> numpy dtypes (onnx.TensorProto element types as ORT names them)
ORT_DTYPES: Dict[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}

# Hugging Face side files read next to model.onnx
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
CONFIG_FILE = "config.json"
GENERATION_CONFIG_FILE = "generation_config.json"

WATCHDOG_POLL_S = 0.002

# GPT-2 byte-level BPE alphabet: bytes -> printable unicode characters (GPT-2 encoder.py, bytes_to_unicode)
def _bytes_to_unicode() -> Dict[int, str]:
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


BYTE_LEVEL_DECODE = {char: byte for byte, char in _bytes_to_unicode().items()}
BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
METASPACE = "\u2581"


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise unavailable("ONNX Runtime runner (onnxruntime)", "onnx") from None
    return onnxruntime


def _read_json(path: Path) -> Dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: not valid JSON ({exc})") from None
    return data if isinstance(data, dict) else {}


def _ids(value: Any) -> List[int]:
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []


class _TokenBytes:
    """Token id -> the bytes it stands for, from tokenizer.json's model and decoder kind.

    Streaming needs bytes per token (a character may span tokens); ``Tokenizer.decode`` on
    one id would turn half a character into U+FFFD.
    """

    def __init__(self, tokenizer, spec: Dict[str, Any]):
        self.tokenizer = tokenizer
        decoder = json.dumps(spec.get("decoder") or {})
        self.byte_level = '"ByteLevel"' in decoder
        self.metaspace = '"Metaspace"' in decoder or METASPACE in decoder
        self.special = {t["id"] for t in spec.get("added_tokens", []) if t.get("special")}
        self.added = {t["id"]: t["content"] for t in spec.get("added_tokens", [])}
        self.piece = lru_cache(maxsize=None)(self._piece)

    def _piece(self, token: int) -> bytes:
        if token in self.special:
            return b""
        if token in self.added:
            return self.added[token].encode("utf-8")
        text = self.tokenizer.id_to_token(token)
        if text is None:
            return b""
        fallback = BYTE_FALLBACK.match(text)
        if fallback:
            return bytes([int(fallback.group(1), 16)])
        if self.byte_level and all(c in BYTE_LEVEL_DECODE for c in text):
            return bytes(BYTE_LEVEL_DECODE[c] for c in text)
        if self.metaspace:
            text = text.replace(METASPACE, " ")
        return text.encode("utf-8")

    def __call__(self, ids: Sequence[int]) -> bytes:
        return b"".join(self.piece(int(t)) for t in ids)


# --------------------------------------------------------- external data check
# Field numbers of onnx/onnx.proto (ModelProto ... TensorProto) on the path from a model to
# every tensor that may keep its bytes in an external file: initializers, sparse
# initializers, tensor attributes (Constant nodes), subgraphs (If/Loop), functions, training.
ONNX_CHILDREN: Dict[str, Dict[int, str]] = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "function": {7: "node"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
}
TENSOR_DIMS, TENSOR_DATA_TYPE, TENSOR_NAME, TENSOR_EXTERNAL_DATA, TENSOR_DATA_LOCATION = 1, 2, 8, 13, 14
DATA_LOCATION_EXTERNAL = 1
# TensorProto.DataType -> bits per element (onnx.proto); strings and unknown types are not sized
ONNX_DTYPE_BITS: Dict[int, int] = {
    1: 32, 2: 8, 3: 8, 4: 16, 5: 16, 6: 32, 7: 64, 9: 8, 10: 16, 11: 64, 12: 32, 13: 64,
    14: 64, 15: 128, 16: 16, 17: 8, 18: 8, 19: 8, 20: 8, 21: 4, 22: 4, 23: 4, 24: 8, 25: 2, 26: 2,
}
MAX_PROTO_DEPTH = 64
MAX_TENSOR_DIMS = 64


class _Proto:
    """Bounded reads of protobuf wire format from a buffer (no copies, no protobuf package)."""

    def __init__(self, buffer: Any, path: Path):
        self.buffer = buffer
        self.path = path

    def fail(self, message: str) -> ModelFileError:
        return ModelFileError(f"{self.path}: not a valid ONNX model: {message}")

    def varint(self, pos: int, end: int) -> Tuple[int, int]:
        value = shift = 0
        while True:
            if pos >= end or shift > 63:
                raise self.fail(f"expected a varint at byte {pos}, found a truncated or overlong one")
            byte = self.buffer[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value, pos

    def fields(self, start: int, end: int):
        """(field number, wire type, value or (begin, end) of a length-delimited field)."""
        pos = start
        while pos < end:
            key, pos = self.varint(pos, end)
            number, wire = key >> 3, key & 7
            if number == 0:
                raise self.fail(f"expected a field number at byte {pos}, found 0")
            if wire == 0:
                value, pos = self.varint(pos, end)
            elif wire in (1, 5):
                size = 8 if wire == 1 else 4
                if pos + size > end:
                    raise self.fail(f"field {number} at byte {pos}: expected {size} bytes, found {end - pos} left")
                value, pos = int.from_bytes(self.buffer[pos:pos + size], "little"), pos + size
            elif wire == 2:
                length, pos = self.varint(pos, end)
                if length > end - pos:
                    raise self.fail(
                        f"field {number} at byte {pos}: expected at most {end - pos} bytes (what is left), found length {length}"
                    )
                value, pos = (pos, pos + length), pos + length
            else:
                raise self.fail(f"field {number}: expected wire type 0, 1, 2 or 5, found {wire}")
            yield number, wire, value

    def text(self, span: Tuple[int, int], what: str) -> str:
        try:
            return bytes(self.buffer[span[0]:span[1]]).decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"expected {what} in UTF-8, found invalid bytes") from None


def _external_tensors(proto: _Proto, start: int, end: int, kind: str, depth: int, out: list) -> None:
    if depth > MAX_PROTO_DEPTH:
        raise proto.fail(f"expected subgraphs nested at most {MAX_PROTO_DEPTH} deep, found deeper nesting")
    if kind == "tensor":
        tensor: Dict[str, Any] = {"dims": [], "entries": {}, "name": "?", "location": 0, "data_type": 0}
        for number, wire, value in proto.fields(start, end):
            if number == TENSOR_DIMS and wire == 0 and len(tensor["dims"]) <= MAX_TENSOR_DIMS:
                tensor["dims"].append(value - (1 << 64) if value >= 1 << 63 else value)
            elif number == TENSOR_DIMS and wire == 2:  # packed repeated int64
                pos = value[0]
                while pos < value[1] and len(tensor["dims"]) <= MAX_TENSOR_DIMS:  # more is refused below
                    dim, pos = proto.varint(pos, value[1])
                    tensor["dims"].append(dim - (1 << 64) if dim >= 1 << 63 else dim)
            elif number == TENSOR_DATA_TYPE and wire == 0:
                tensor["data_type"] = value
            elif number == TENSOR_NAME and wire == 2:
                tensor["name"] = proto.text(value, "a tensor name")[:200]
            elif number == TENSOR_DATA_LOCATION and wire == 0:
                tensor["location"] = value
            elif number == TENSOR_EXTERNAL_DATA and wire == 2:
                entry = {n: proto.text(v, "an external_data entry")
                         for n, w, v in proto.fields(*value) if w == 2 and n in (1, 2)}
                tensor["entries"][entry.get(1, "")] = entry.get(2, "")
        if tensor["location"] == DATA_LOCATION_EXTERNAL:
            out.append(tensor)
        return
    children = ONNX_CHILDREN[kind]
    for number, wire, value in proto.fields(start, end):
        child = children.get(number)
        if child is not None and wire == 2:
            _external_tensors(proto, value[0], value[1], child, depth + 1, out)


def check_external_data(model_path: Path) -> int:
    """Check an ONNX model's external-data references before ONNX Runtime opens any file.

    Each must name a regular file inside the model's directory (no absolute paths, no '..',
    no symlink out), with offset and length inside that file and a length that matches the
    tensor's shape and type. Older ONNX Runtime releases check none of this. Returns the
    number of external tensors; raises ModelFileError.
    """
    import mmap

    model_path = Path(model_path)
    folder = model_path.parent.resolve()
    try:
        with open(model_path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                raise ModelFileError(f"{model_path}: not a valid ONNX model: expected a ModelProto, found an empty file")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
                proto = _Proto(buffer, model_path)
                graphs = [v for n, w, v in proto.fields(0, size) if n == 7 and w == 2]
                if not graphs:
                    raise proto.fail("expected a ModelProto with a graph (field 7), found none")
                tensors: list = []
                _external_tensors(proto, 0, size, "model", 0, tensors)
    except OSError as exc:
        raise ModelFileError(f"cannot read ONNX model {model_path}: expected a readable file, found {exc.strerror}") from None
    sizes: Dict[Path, int] = {}
    for tensor in tensors:
        _check_external_tensor(model_path, folder, tensor, sizes)
    return len(tensors)


def _check_external_tensor(model_path: Path, folder: Path, tensor: Dict[str, Any], sizes: Dict[Path, int]) -> None:
    where = f"{model_path}: external data of tensor {tensor['name']!r}"
    entries = tensor["entries"]
    location = entries.get("location", "")
    shown = repr(location[:120])
    if not location or "\x00" in location:
        raise ModelFileError(f"{where}: expected a relative file name as location, found {shown}")
    pure = PurePosixPath(location)
    if pure.is_absolute() or ".." in pure.parts:
        raise ModelFileError(f"{where}: expected a file inside {folder}, found location {shown} (leaves the directory)")
    try:
        target = (folder / location).resolve()
    except (OSError, RuntimeError):
        raise ModelFileError(f"{where}: expected a resolvable file inside {folder}, found location {shown}") from None
    if folder not in target.parents:
        raise ModelFileError(f"{where}: expected a file inside {folder}, found {shown} resolving to {target}")
    if target not in sizes:
        try:
            info = target.stat()
        except OSError:
            raise ModelFileError(f"{where}: expected data file {shown}, found no such file") from None
        if not stat.S_ISREG(info.st_mode):
            raise ModelFileError(f"{where}: expected a regular data file, found {shown} is not one")
        sizes[target] = info.st_size
    file_size = sizes[target]
    numbers = {}
    for key in ("offset", "length"):
        raw = entries.get(key)
        if raw is None:
            continue
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 20):
            raise ModelFileError(f"{where}: expected {key} as a non-negative integer, found {raw[:40]!r}")
        numbers[key] = int(raw)
    offset = numbers.get("offset", 0)
    if offset > file_size:
        raise ModelFileError(f"{where}: expected offset {offset} inside {shown}, found a file of {file_size} bytes")
    length = numbers.get("length", file_size - offset)
    if offset + length > file_size:
        raise ModelFileError(
            f"{where}: expected bytes {offset}..{offset + length} inside {shown}, "
            f"found a file of {file_size} bytes"
        )
    dims = tensor["dims"]
    bits = ONNX_DTYPE_BITS.get(tensor["data_type"])
    if len(dims) > MAX_TENSOR_DIMS or any(d < 0 for d in dims):
        raise ModelFileError(f"{where}: expected at most {MAX_TENSOR_DIMS} non-negative dims, found {dims[:8]}")
    if bits is not None:
        needed = -(-math.prod(dims) * bits // 8)
        if ("length" in numbers and length != needed) or length < needed:
            raise ModelFileError(
                f"{where}: expected {needed} bytes for shape {dims[:8]}, found length {length} in {shown}"
            )


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
        self._config = _read_json(folder / CONFIG_FILE)
        self._generation_config = _read_json(folder / GENERATION_CONFIG_FILE)
        self._tokenizer_config = _read_json(folder / TOKENIZER_CONFIG_FILE)
        self._load_tokenizer(folder / TOKENIZER_FILE)
        self._end_ids = set(_ids(self._generation_config.get("eos_token_id")) or _ids(self._config.get("eos_token_id")))
        self._bos_id = next(iter(_ids(self._config.get("bos_token_id")) or _ids(self._generation_config.get("bos_token_id"))), None)
        template_file = folder / CHAT_TEMPLATE_FILE
        self._template_text = self._pick_template(self._tokenizer_config.get("chat_template"))
        if self._template_text is None and template_file.exists():
            self._template_text = template_file.read_text(encoding="utf-8")
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
            match = PAST_INPUT.match(name)
            if match:
                past[(int(match.group(1)), match.group(2))] = info
        if not past:
            raise ModelFileError(
                f"{self.model_path}: the graph has no past_key_values inputs; export it with KV cache "
                "(optimum task text-generation-with-past, as `edgert convert --to onnx` does)"
            )
        self._layers = sorted({layer for layer, _ in past})
        self._past_names = [f"past_key_values.{layer}.{kind}" for layer in self._layers for kind in ("key", "value")]
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
            self._kv_shapes[f"past_key_values.{layer}.{kind}"] = (shape[1], shape[3])
        self._has_mask = ATTENTION_MASK in inputs
        self._has_positions = POSITION_IDS in inputs
        self._id_dtype = ORT_DTYPES.get(inputs[INPUT_IDS].type, np.int64)
        self._output_names = [LOGITS] + self._present_names

    def _load_tokenizer(self, path: Path) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise unavailable("ONNX Runtime runner (tokenizers)", "onnx") from None
        if not path.exists():
            raise ModelFileError(f"{path} is missing: the ONNX runner needs the model's tokenizer.json next to the .onnx file")
        try:
            self._tokenizer = Tokenizer.from_file(str(path))
            spec = json.loads(path.read_text(encoding="utf-8"))
        except Exception as exc:
            raise ModelFileError(f"{path}: not a tokenizers file ({exc})") from None
        self._token_bytes = _TokenBytes(self._tokenizer, spec)

    @staticmethod
    def _pick_template(value: Any) -> Optional[str]:
        if isinstance(value, str) and value.strip():
            return value
        if isinstance(value, list):  # [{"name": ..., "template": ...}]
            named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
            chosen = named.get("default") or next(iter(named.values()), None)
            return chosen if isinstance(chosen, str) else None
        return None

    def _close_impl(self) -> None:
        self._session = None
        self._past = None

    def _reset(self) -> None:
        self._past = {name: np.zeros((1, heads, 0, dim), dtype=self._kv_dtype) for name, (heads, dim) in self._kv_shapes.items()}
        self._pos = 0

    # ----------------------------------------------------------------- tokens
    def _tokenize_impl(self, text: str) -> List[int]:
        ids = self._tokenizer.encode(text, add_special_tokens=True).ids
        if len(ids) >= 2 and self._bos_id is not None and ids[0] == ids[1] == self._bos_id:
            ids = ids[1:]  # the template wrote BOS itself and the tokenizer added another
        return list(ids)

    def _detokenize_impl(self, ids: Sequence[int]) -> bytes:
        return self._token_bytes(ids)

    def _is_end_impl(self, token: int) -> bool:
        return token in self._end_ids

    def _model_chat_template(self) -> Optional[str]:
        return self._template_text

    def _special_token_texts(self) -> tuple:
        def text(token: Optional[int]) -> str:
            return (self._tokenizer.id_to_token(token) or "") if token is not None else ""

        eos = next(iter(sorted(self._end_ids)), None)
        return text(self._bos_id), text(eos)

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
    def _filler_ids(self, n: int) -> List[int]:
        from .llama_cpp import FILLER_TEXT

        base = self._tokenize_impl(FILLER_TEXT)
        return (base * (n // len(base) + 1))[:n]

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

