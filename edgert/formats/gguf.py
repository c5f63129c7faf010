"""A small, defensive reader for GGUF headers (metadata and tensor infos).

edgert reads the header itself, without llama.cpp, to describe a model for the manifest
and to refuse malformed files before they reach the engine. Every count and length is
checked against the bytes left in the file, so a hostile header cannot make it allocate
or loop beyond the file's own size.

Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md (GGUF v2 and v3;
v1 used 32-bit counts and is refused). Little-endian files only.
"""

from __future__ import annotations

import math
import mmap
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..errors import ModelFileError

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32

# gguf_type in gguf.md: id -> (name, struct format or None for composite types)
VALUE_TYPES: Dict[int, tuple] = {
    0: ("UINT8", "<B"),
    1: ("INT8", "<b"),
    2: ("UINT16", "<H"),
    3: ("INT16", "<h"),
    4: ("UINT32", "<I"),
    5: ("INT32", "<i"),
    6: ("FLOAT32", "<f"),
    7: ("BOOL", "<?"),
    8: ("STRING", None),
    9: ("ARRAY", None),
    10: ("UINT64", "<Q"),
    11: ("INT64", "<q"),
    12: ("FLOAT64", "<d"),
}
STRING_TYPE, ARRAY_TYPE = 8, 9

# llama_ftype in llama.h (value of general.file_type) -> quantization name
FILE_TYPES: Dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
    10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M",
    16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S",
    22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M",
    28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0",
    37: "TQ2_0", 38: "MXFP4_MOE",
}

# ggml_type in ggml.h -> (name, elements per block, bytes per block)
TENSOR_TYPES: Dict[int, tuple] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
}

MAX_DIMS = 4  # GGML_MAX_DIMS in ggml.h; llama.cpp refuses more
MAX_KEY_BYTES = 65535
KEPT_ARRAY_ITEMS = 64  # numeric arrays up to this length are kept; longer ones are skipped


@dataclass
class TensorInfo:
    name: str
    shape: List[int]
    type_id: int
    offset: int

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def type_name(self) -> str:
        return TENSOR_TYPES.get(self.type_id, (f"type_{self.type_id}",))[0]

    @property
    def n_bytes(self) -> int:
        _, block, size = TENSOR_TYPES[self.type_id]
        return self.n_elements // block * size


@dataclass
class GGUFHeader:
    path: Path
    version: int
    metadata: Dict[str, Any]
    tensors: List[TensorInfo]
    data_offset: int
    file_size: int
    # arrays of strings (vocabularies) are summarised by length, not kept
    array_lengths: Dict[str, int] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    @property
    def architecture(self) -> str:
        return str(self.get("general.architecture", "unknown"))

    def arch_key(self, suffix: str, default: Any = None) -> Any:
        return self.get(f"{self.architecture}.{suffix}", default)

    @property
    def parameter_count(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @property
    def context_length(self) -> Optional[int]:
        return _int_or_none(self.arch_key("context_length"))

    @property
    def quantization(self) -> str:
        file_type = _int_or_none(self.get("general.file_type"))
        if file_type is None:
            return self._dominant_tensor_type()
        return FILE_TYPES.get(file_type, f"ftype_{file_type}")

    def _dominant_tensor_type(self) -> str:
        counts: Dict[str, int] = {}
        for tensor in self.tensors:
            counts[tensor.type_name] = counts.get(tensor.type_name, 0) + tensor.n_elements
        return max(counts, key=counts.get) if counts else "unknown"

    @property
    def chat_template(self) -> Optional[str]:
        value = self.get("tokenizer.chat_template")
        return value if isinstance(value, str) else None

    def tokenizer_info(self) -> Dict[str, Any]:
        info: Dict[str, Any] = {"model": self.get("tokenizer.ggml.model")}
        if "tokenizer.ggml.pre" in self.metadata:
            info["pre"] = self.get("tokenizer.ggml.pre")
        info["vocab_size"] = self.array_lengths.get("tokenizer.ggml.tokens")
        for key in ("bos_token_id", "eos_token_id", "padding_token_id", "unknown_token_id"):
            value = _int_or_none(self.get(f"tokenizer.ggml.{key}"))
            if value is not None:
                info[key] = value
        for key in ("add_bos_token", "add_eos_token"):
            value = self.get(f"tokenizer.ggml.{key}")
            if isinstance(value, (bool, int)):
                info[key] = bool(value)
        return info


def _show(value: Any, limit: int = 80) -> str:
    """A name for an error message: repr (one line), cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _int_or_none(value: Any) -> Optional[int]:
    """Metadata written with an unexpected type (string, float, array) reads as absent."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


class _Reader:
    """Bounded little-endian reads from a memory-mapped file of known size."""

    def __init__(self, buffer: Any, size: int, path: Path):
        self.buffer = buffer
        self.size = size
        self.path = path
        self.pos = 0

    @property
    def remaining(self) -> int:
        return self.size - self.pos

    def fail(self, message: str) -> ModelFileError:
        return ModelFileError(f"{self.path}: not a valid GGUF file: {message}")

    def _need(self, n: int, what: str) -> None:
        if n < 0 or n > self.remaining:
            raise self.fail(
                f"{what} needs {n} bytes at offset {self.pos}: expected them in the file, "
                f"found {self.remaining} left (file truncated?)"
            )

    def read(self, n: int, what: str) -> bytes:
        self._need(n, what)
        data = self.buffer[self.pos : self.pos + n]
        self.pos += n
        return data

    def unpack(self, fmt: str, what: str) -> Any:
        n = struct.calcsize(fmt)
        self._need(n, what)
        value = struct.unpack_from(fmt, self.buffer, self.pos)[0]
        self.pos += n
        return value

    def count(self, what: str, min_item_bytes: int) -> int:
        n = self.unpack("<Q", what)
        if n * min_item_bytes > self.remaining:
            raise self.fail(
                f"{what} is {n}, more than the {self.remaining} bytes left can hold "
                f"(expected at most {self.remaining // min_item_bytes}, found {n})"
            )
        return n

    def string(self, what: str, limit: Optional[int] = None) -> str:
        n = self.unpack("<Q", f"{what} length")
        if limit is not None and n > limit:
            raise self.fail(f"expected {what} of at most {limit} bytes, found {n} bytes")
        raw = self.read(n, what)
        try:
            return bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.fail(f"{what} is not UTF-8: expected UTF-8 text, found {exc.reason} at byte {exc.start}") from None

    def skip(self, n: int, what: str) -> None:
        self._need(n, what)
        self.pos += n


def _read_value(r: _Reader, type_id: int, key: str, keep_strings: bool = True) -> Any:
    if type_id not in VALUE_TYPES:
        raise r.fail(f"key {_show(key)}: expected a value type among {min(VALUE_TYPES)}..{max(VALUE_TYPES)}, found {type_id}")
    if type_id == STRING_TYPE:
        if keep_strings:
            return r.string(f"value of {_show(key)}")
        r.skip(r.unpack("<Q", f"length in {_show(key)}"), f"string in {_show(key)}")
        return None
    if type_id == ARRAY_TYPE:
        raise r.fail(f"key {_show(key)}: expected a scalar or string, found a nested array (not read by edgert)")
    return r.unpack(VALUE_TYPES[type_id][1], f"value of {_show(key)}")


def _read_array(r: _Reader, key: str, header: GGUFHeader) -> Any:
    elem_type = r.unpack("<I", f"array type of {_show(key)}")
    if elem_type not in VALUE_TYPES or elem_type == ARRAY_TYPE:
        raise r.fail(
            f"array {_show(key)}: expected a scalar or string element type, found type {elem_type} "
            "(nested arrays are not read by edgert)" if elem_type == ARRAY_TYPE else
            f"array {_show(key)}: expected a scalar or string element type, found unknown type {elem_type}"
        )
    fmt = VALUE_TYPES[elem_type][1]
    item_bytes = 8 if elem_type == STRING_TYPE else struct.calcsize(fmt)
    n = r.count(f"length of array {_show(key)}", item_bytes)
    header.array_lengths[key] = n
    if elem_type == STRING_TYPE:
        # vocabularies and merges: walk them (bounds-checked) without keeping them
        for _ in range(n):
            _read_value(r, STRING_TYPE, key, keep_strings=False)
        return None
    if n > KEPT_ARRAY_ITEMS:
        r.skip(n * item_bytes, f"array {_show(key)}")  # scores, token types: not needed, not copied
        return None
    data = r.read(n * item_bytes, f"array {_show(key)}")
    return list(struct.unpack(f"<{n}{fmt[1:]}", data))


def read_header(path: Path) -> GGUFHeader:
    """Parse and bounds-check a GGUF file's header; raise ModelFileError if it is malformed."""
    path = Path(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or never end
            raise ModelFileError(f"{path}: expected a regular GGUF file, found a directory or special file")
        size = info.st_size
        handle = open(path, "rb")
    except FileNotFoundError:
        raise ModelFileError(f"model file not found: expected a GGUF file at {path}, found none") from None
    except OSError as exc:
        raise ModelFileError(f"cannot read model file {path}: expected a readable file, found {exc.strerror}") from None
    with handle:
        if size == 0:
            raise ModelFileError(f"{path}: not a GGUF file: expected a GGUF header, found an empty file")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
            return _parse(_Reader(buffer, size, path))


def _parse(r: _Reader) -> GGUFHeader:
    path, size = r.path, r.size
    magic = bytes(r.buffer[:4])
    r.pos = min(4, size)
    if magic != GGUF_MAGIC:
        raise ModelFileError(
            f"{path}: not a GGUF file: expected magic b'GGUF', found {magic!r}"
        )
    version = r.unpack("<I", "version")
    if version not in SUPPORTED_VERSIONS:
        raise r.fail(f"version {version} is not supported (expected one of {SUPPORTED_VERSIONS}, found {version})")
    n_tensors = r.count("tensor count", 8 + 4 + 8 + 4)
    n_kv = r.count("metadata key count", 8 + 4)
    header = GGUFHeader(path, version, {}, [], 0, size)
    for _ in range(n_kv):
        key = r.string("metadata key", limit=MAX_KEY_BYTES)
        if key in header.metadata:
            raise r.fail(f"expected unique metadata keys, found {_show(key)} twice")
        type_id = r.unpack("<I", f"type of {_show(key)}")
        if type_id == ARRAY_TYPE:
            value = _read_array(r, key, header)
        else:
            value = _read_value(r, type_id, key)
        header.metadata[key] = value
    names = set()
    for index in range(n_tensors):
        name = r.string(f"name of tensor {index}", limit=MAX_KEY_BYTES)
        if name in names:
            raise r.fail(f"expected unique tensor names, found {_show(name)} twice")
        names.add(name)
        n_dims = r.unpack("<I", f"dims of {_show(name)}")
        if not 1 <= n_dims <= MAX_DIMS:
            raise r.fail(f"tensor {_show(name)}: expected 1..{MAX_DIMS} dimensions, found {n_dims}")
        shape = [r.unpack("<Q", f"shape of {_show(name)}") for _ in range(n_dims)]
        type_id = r.unpack("<I", f"type of {_show(name)}")
        if type_id not in TENSOR_TYPES:
            raise r.fail(f"tensor {_show(name)}: expected a ggml type from ggml.h, found unknown type {type_id}")
        offset = r.unpack("<Q", f"offset of {_show(name)}")
        header.tensors.append(TensorInfo(name, shape, type_id, offset))
    alignment = header.get("general.alignment", DEFAULT_ALIGNMENT)
    if isinstance(alignment, bool) or not isinstance(alignment, int) or alignment <= 0 \
            or alignment & (alignment - 1):
        raise r.fail(f"expected general.alignment to be a power-of-two integer, found {_show(alignment)}")
    position = r.pos
    header.data_offset = position + (-position % alignment)
    _check_tensor_extents(r, header, alignment)
    return header


def _check_tensor_extents(r: _Reader, header: GGUFHeader, alignment: int) -> None:
    """Every tensor lies inside the data section, aligned, and no two overlap."""
    data_bytes = header.file_size - header.data_offset
    for tensor in header.tensors:
        _, block, _ = TENSOR_TYPES[tensor.type_id]
        if any(d == 0 for d in tensor.shape) or tensor.shape[0] % block:
            raise r.fail(
                f"tensor {_show(tensor.name)}: expected non-zero dimensions, the first a multiple of "
                f"{block} ({tensor.type_name} blocks), found shape {tensor.shape}"
            )
        if tensor.offset % alignment:
            raise r.fail(
                f"tensor {_show(tensor.name)}: expected an offset that is a multiple of the alignment "
                f"{alignment}, found {tensor.offset}"
            )
        end = tensor.offset + tensor.n_bytes
        if end > data_bytes:
            raise r.fail(
                f"tensor {_show(tensor.name)}: expected it to end within the data section of "
                f"{max(data_bytes, 0)} bytes, found it ends at byte {end} (file truncated?)"
            )
    previous = None
    for tensor in sorted(header.tensors, key=lambda t: t.offset):
        if previous is not None and tensor.offset < previous.offset + previous.n_bytes:
            raise r.fail(
                f"expected non-overlapping tensors, found {_show(tensor.name)} at offset {tensor.offset}, "
                f"inside {_show(previous.name)} (bytes {previous.offset}..{previous.offset + previous.n_bytes})"
            )
        previous = tensor
