"""A small, defensive reader for safetensors headers.

Weights given to ``edgert convert`` come from outside; their header is checked here before
torch, transformers or the safetensors library map a single tensor, so a malformed file
gets one clear edgert error instead of an allocation sized by the file's own claims.

Format: https://github.com/huggingface/safetensors (README, "Format"): an 8-byte
little-endian header length N, N bytes of UTF-8 JSON (``{name: {dtype, shape,
data_offsets: [begin, end]}, "__metadata__": {str: str}}``, offsets relative to the byte
after the header), then the data buffer. Like the reference implementation, the tensors
must tile the data buffer exactly: no gaps, no overlaps, nothing beyond its end.
"""

from __future__ import annotations

import math
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List

from ..errors import ModelFileError
from .strict_json import loads_strict

MAX_HEADER_BYTES = 100_000_000  # the reference implementation's MAX_HEADER_SIZE
METADATA_KEY = "__metadata__"
MAX_RANK = 64  # torch's limit on tensor dimensions
MAX_DIM = 2**63 - 1  # sizes are int64 in torch and numpy

# dtype name -> bits per element (safetensors Dtype enum)
DTYPE_BITS: Dict[str, int] = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}


@dataclass
class SafetensorsTensor:
    name: str
    dtype: str
    shape: List[int]
    begin: int  # offsets inside the data buffer
    end: int

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)


@dataclass
class SafetensorsHeader:
    path: Path
    header_bytes: int
    data_bytes: int
    tensors: Dict[str, SafetensorsTensor] = field(default_factory=dict)
    metadata: Dict[str, str] = field(default_factory=dict)

    @property
    def parameter_count(self) -> int:
        return sum(t.n_elements for t in self.tensors.values())


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_safetensors_header(path: Path) -> SafetensorsHeader:
    """Parse and check a safetensors file's header; raise ModelFileError if it is malformed."""
    path = Path(path)

    def fail(message: str) -> ModelFileError:
        return ModelFileError(f"{path}: not a valid safetensors file: {message}")

    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ModelFileError(f"{path}: expected a regular safetensors file, found a directory or special file")
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise fail(f"expected an 8-byte header length, found a {len(prefix)}-byte file")
            (length,) = struct.unpack("<Q", prefix)
            available = info.st_size - 8
            if length > available:
                raise fail(f"expected a header length of at most {available} (the bytes that follow), found {length}")
            if length > MAX_HEADER_BYTES:
                raise fail(f"expected a header length of at most {MAX_HEADER_BYTES}, found {length}")
            raw = handle.read(length)
    except FileNotFoundError:
        raise ModelFileError(f"model file not found: expected a safetensors file at {path}, found none") from None
    except OSError as exc:
        raise ModelFileError(f"cannot read model file {path}: expected a readable file, found {exc.strerror}") from None
    if len(raw) != length:
        raise fail(f"expected a header of {length} bytes, found only {len(raw)} (file changed while read?)")
    header = _parse_json(raw, fail)
    result = SafetensorsHeader(path, length, info.st_size - 8 - length)
    for name, entry in header.items():
        if name == METADATA_KEY:
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise fail(f"expected {METADATA_KEY} to map strings to strings, found {_show(entry)}")
            result.metadata = entry
            continue
        result.tensors[name] = _tensor(name, entry, fail)
    _check_layout(result, fail)
    return result


def _parse_json(raw: bytes, fail) -> Dict[str, Any]:
    if not raw.lstrip(b" ").startswith(b"{"):
        raise fail(f"expected the header to be a JSON object starting with '{{', found {_show(raw[:16])}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fail(f"expected a UTF-8 JSON header, found byte {raw[exc.start]:#04x} at offset {exc.start}") from None
    data = loads_strict(text, lambda message: fail(f"header: {message}"))
    if not isinstance(data, dict):
        raise fail(f"expected a JSON object as header, found {type(data).__name__}")
    return data


def _nonneg_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _tensor(name: str, entry: Any, fail) -> SafetensorsTensor:
    where = f"tensor {_show(name)}"
    if not isinstance(entry, dict):
        raise fail(f"{where}: expected an object with dtype, shape, data_offsets, found {type(entry).__name__}")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_BITS:
        raise fail(f"{where}: expected a dtype among {', '.join(DTYPE_BITS)}, found {_show(dtype)}")
    if not isinstance(shape, list) or len(shape) > MAX_RANK \
            or not all(_nonneg_int(d) and d <= MAX_DIM for d in shape):
        raise fail(
            f"{where}: expected shape as a list of at most {MAX_RANK} integers in 0..2^63-1, found {_show(shape)}"
        )
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_nonneg_int(o) for o in offsets) \
            or offsets[0] > offsets[1]:
        raise fail(f"{where}: expected data_offsets [begin, end] with 0 <= begin <= end, found {_show(offsets)}")
    tensor = SafetensorsTensor(name, dtype, list(shape), offsets[0], offsets[1])
    bits = tensor.n_elements * DTYPE_BITS[dtype]
    if bits % 8 or bits // 8 != tensor.end - tensor.begin:
        raise fail(
            f"{where}: expected {f'{bits // 8} bytes' if bits % 8 == 0 else f'{bits} bits'} for shape "
            f"{_show(shape)} of {dtype}, found data_offsets spanning {tensor.end - tensor.begin} bytes"
        )
    return tensor


def _check_layout(header: SafetensorsHeader, fail) -> None:
    """The tensors tile the data buffer: sorted by offset, each starts where the last ended."""
    position = 0
    previous = None
    for tensor in sorted(header.tensors.values(), key=lambda t: (t.begin, t.end)):
        if tensor.end > header.data_bytes:
            raise fail(
                f"tensor {_show(tensor.name)}: expected it to end within the {header.data_bytes}-byte data "
                f"buffer, found it ends at byte {tensor.end} (file truncated?)"
            )
        if tensor.begin < position:
            raise fail(
                f"expected non-overlapping tensors, found {_show(tensor.name)} at byte {tensor.begin}, "
                f"inside {_show(previous.name)} (bytes {previous.begin}..{previous.end})"
            )
        if tensor.begin > position:
            raise fail(f"expected tensor data to continue at byte {position}, found a gap up to "
                       f"{tensor.begin} before tensor {_show(tensor.name)}")
        position, previous = tensor.end, tensor
    if position != header.data_bytes:
        raise fail(f"expected tensors to cover all {header.data_bytes} bytes of the data buffer, found {position}")
