"""ONNX model files: a bounded protobuf reader that checks external-data references.

An ONNX model may keep tensor bytes in other files named by the model. Before ONNX Runtime
opens any of them, ``check_external_data`` walks the protobuf wire format itself (no onnx
or protobuf package) and refuses locations outside the model's directory, symlinks out,
and offsets or lengths that do not fit the file or the tensor's shape. Field numbers follow
onnx/onnx.proto. Costs and memory of an ONNX export come from its config.json
(``hf_config.py``, through the registry in ``edgert.formats``).
"""

from __future__ import annotations

import math
import mmap
import os
import stat
from pathlib import Path, PurePosixPath
from typing import Any, Dict, Tuple

from ..errors import ModelFileError

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

