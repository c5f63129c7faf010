"""A corpus of malformed model files and bundles, and a checker that feeds them to edgert.

Run ``python tests/reliability/corpus.py OUT_DIR`` to write the corpus (and print one line
per case with how edgert's loader answered), or import ``build_corpus`` / ``check_case``.

Every file is built from the format specs, independently of edgert's readers:
GGUF (ggml/docs/gguf.md, via ``tests/gguf_factory.py``), ONNX external data
(onnx/onnx.proto ``TensorProto.external_data``), safetensors (huggingface/safetensors
README) and the bundle manifest (``edgert.json``, written as plain JSON here).

``check_case`` runs the real loader for the case's kind:

- gguf: ``edgert.formats.gguf.read_header`` and then ``LlamaCppRunner(path).load()``
  (which reads the header again before llama.cpp parses the file). If the header reader
  ever accepted a corpus file, the llama.cpp load runs in a child process, so a crash in
  llama.cpp is reported instead of killing the caller.
- onnx: ``OnnxRuntimeRunner(path).load()`` (external data checked before ONNX Runtime).
- safetensors: ``read_safetensors_header`` and ``converters.source.resolve_source`` on the
  case's directory (the path ``edgert convert`` takes).
- manifest: ``Bundle.open(dir)`` then ``bundle.verify()``.

Memory: ``extra_memory_mb`` is the larger of (a) the tracemalloc peak of Python
allocations made during the load and (b) the growth of the process's peak RSS
(``ru_maxrss``) across the load, which also catches native allocations (llama.cpp, ONNX
Runtime) but only when they raise the process's peak. Imports are done before measuring.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

TESTS_DIR = Path(__file__).resolve().parent.parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))
REPO_DIR = TESTS_DIR.parent
if str(REPO_DIR) not in sys.path:
    sys.path.insert(0, str(REPO_DIR))

from gguf_factory import ARR, STR, U32, build_gguf, default_metadata, gguf_string, kv  # noqa: E402

KINDS = ("gguf", "onnx", "safetensors", "manifest")
DEFAULT_TIMEOUT_S = 10.0


@dataclass
class Case:
    name: str
    kind: str  # "gguf" | "onnx" | "safetensors" | "manifest"
    path: Path
    description: str


@dataclass
class Outcome:
    name: str
    kind: str
    rejected: bool  # True when edgert refused the input with an EdgertError
    error_type: str  # exception class name, "" when accepted
    message: str
    seconds: float
    extra_memory_mb: float


# ------------------------------------------------------------------------------- GGUF
def _gguf_layout() -> Dict[str, int]:
    """Byte positions inside the default factory file, for truncation points."""
    meta = default_metadata()
    kv_end = 24 + sum(len(m) for m in meta)
    blob = build_gguf()
    tensor_infos = build_gguf(data=False)
    info_end = kv_end + sum(
        len(gguf_string(name)) + 4 + 8 * len(shape) + 4 + 8
        for name, shape in (("token_embd.weight", [8, 4]), ("output_norm.weight", [8]))
    )
    return {"kv_end": kv_end, "info_end": info_end, "data_start": len(tensor_infos), "size": len(blob),
            "first_kv": 24 + len(meta[0])}


def _tensor_info(name: str, shape: List[int], type_id: int, offset: int, n_dims: Optional[int] = None) -> bytes:
    dims = len(shape) if n_dims is None else n_dims
    return gguf_string(name) + struct.pack("<I", dims) + b"".join(struct.pack("<Q", d) for d in shape) \
        + struct.pack("<IQ", type_id, offset)


def _raw_gguf(infos: List[bytes], metadata: Optional[List[bytes]] = None, data_bytes: int = 256,
              version: int = 3) -> bytes:
    """A GGUF file with hand-written tensor infos (for offsets and dims the factory would not write)."""
    metadata = default_metadata() if metadata is None else metadata
    blob = b"GGUF" + struct.pack("<IQQ", version, len(infos), len(metadata)) + b"".join(metadata) + b"".join(infos)
    blob += b"\0" * (-len(blob) % 32)
    return blob + b"\0" * data_bytes


def _kv_raw(key: str, type_id: int, payload: bytes) -> bytes:
    return gguf_string(key) + struct.pack("<I", type_id) + payload


def _gguf_blobs() -> Dict[str, tuple]:
    good = build_gguf()
    lay = _gguf_layout()
    meta = default_metadata()
    arch = kv("general.architecture", STR, "llama")
    cases: Dict[str, tuple] = {
        "empty": (b"", "empty file"),
        "magic_ggml": (b"GGML" + good[4:], "wrong magic (GGML)"),
        "magic_lowercase": (b"gguf" + good[4:], "wrong magic (lower case)"),
        "magic_only": (b"GGUF", "magic and nothing else"),
        "version_1": (build_gguf(version=1), "GGUF v1 (32-bit counts), unsupported"),
        "version_4": (build_gguf(version=4), "future version 4"),
        "version_max": (build_gguf(version=0xFFFFFFFF), "version 2^32-1"),
        "version_big_endian": (build_gguf(version=0x03000000), "big-endian file (version bytes swapped)"),
        "tensor_count_2_64": (build_gguf(n_tensors=2**64 - 1), "tensor count 2^64-1"),
        "tensor_count_2_63": (build_gguf(n_tensors=2**63), "tensor count 2^63"),
        "kv_count_2_64": (build_gguf(n_kv=2**64 - 1), "metadata key count 2^64-1"),
        "kv_count_2_32": (build_gguf(n_kv=2**32), "metadata key count 2^32, beyond the file"),
        "kv_count_one_too_many": (build_gguf(n_kv=len(meta) + 1), "one more key than written: reads tensor infos as keys"),
        "key_length_2_64": (build_gguf(metadata=[struct.pack("<Q", 2**64 - 1) + b"k"] + meta[1:], n_kv=len(meta)),
                            "key string length 2^64-1"),
        "key_length_beyond_file": (build_gguf(metadata=[struct.pack("<Q", len(good) + 1) + b"k"], tensors=[]),
                                   "key string length one byte beyond the file"),
        "key_too_long": (build_gguf(metadata=[_kv_raw("k" * 70000, U32, struct.pack("<I", 1))], tensors=[]),
                         "key of 70000 bytes (limit 65535)"),
        "key_not_utf8": (build_gguf(metadata=[struct.pack("<Q", 2) + b"\xff\xfe" + struct.pack("<II", U32, 1)], tensors=[]),
                         "key bytes not UTF-8"),
        "value_string_2_63": (build_gguf(metadata=[arch, _kv_raw("general.name", STR, struct.pack("<Q", 2**63))], tensors=[]),
                              "string value length 2^63"),
        "value_string_beyond_file": (build_gguf(metadata=[arch, _kv_raw("general.name", STR, struct.pack("<Q", 10**6) + b"x")],
                                                tensors=[]), "string value length beyond the file"),
        "value_type_13": (build_gguf(metadata=[arch, _kv_raw("x", 13, b"\0" * 8)], tensors=[]), "unknown value type 13"),
        "value_type_max": (build_gguf(metadata=[arch, _kv_raw("x", 0xFFFFFFFF, b"\0" * 8)], tensors=[]),
                           "unknown value type 2^32-1"),
        "array_length_2_63": (build_gguf(metadata=[arch, _kv_raw("arr", ARR, struct.pack("<IQ", U32, 2**63))], tensors=[]),
                              "array length 2^63"),
        "array_of_strings_beyond": (build_gguf(metadata=[arch, _kv_raw("tokenizer.ggml.tokens", ARR,
                                                                        struct.pack("<IQ", STR, 10**9) + gguf_string("a"))],
                                               tensors=[]), "array of 10^9 strings in a tiny file"),
        "array_nested": (build_gguf(metadata=[arch, _kv_raw("arr", ARR, struct.pack("<IQ", ARR, 1) + struct.pack("<IQ", U32, 1)
                                                            + struct.pack("<I", 7))], tensors=[]), "array of arrays"),
        "array_elem_type_99": (build_gguf(metadata=[arch, _kv_raw("arr", ARR, struct.pack("<IQ", 99, 1) + b"\0" * 8)], tensors=[]),
                               "array of unknown element type 99"),
        "duplicate_key": (build_gguf(metadata=meta + [kv("general.architecture", STR, "gpt2")]),
                          "the same metadata key twice"),
        "alignment_24": (build_gguf(metadata=meta + [kv("general.alignment", U32, 24)]), "general.alignment 24 (not a power of two)"),
        "alignment_0": (build_gguf(metadata=meta + [kv("general.alignment", U32, 0)]), "general.alignment 0"),
        "alignment_string": (build_gguf(metadata=meta + [kv("general.alignment", STR, "32")]), "general.alignment as a string"),
        "tensor_type_99": (build_gguf(tensors=[("t", [8], 99)]), "unknown ggml tensor type 99"),
        "tensor_type_removed_4": (build_gguf(tensors=[("t", [32], 4)]), "removed ggml type 4 (Q4_2)"),
        "tensor_n_dims_0": (_raw_gguf([_tensor_info("t", [], 0, 0)]), "tensor with 0 dimensions"),
        "tensor_n_dims_5": (_raw_gguf([_tensor_info("t", [2, 2, 2, 2, 2], 0, 0)]), "tensor with 5 dimensions (GGML_MAX_DIMS is 4)"),
        "tensor_n_dims_2_32": (_raw_gguf([_tensor_info("t", [8], 0, 0, n_dims=0xFFFFFFFF)]), "n_dims 2^32-1"),
        "tensor_dim_zero": (_raw_gguf([_tensor_info("t", [8, 0], 0, 0)]), "a zero dimension"),
        "tensor_dims_overflow_2_63": (_raw_gguf([_tensor_info("t", [2**63, 2**63], 0, 0)]), "dims whose product overflows 64 bits"),
        "tensor_dims_wrap_2_32": (_raw_gguf([_tensor_info("t", [2**32, 2**32], 0, 0)]),
                                  "dims whose 64-bit product wraps to 0"),
        "tensor_dim_2_64": (_raw_gguf([_tensor_info("t", [2**64 - 1], 0, 0)]), "dimension 2^64-1"),
        "tensor_block_mismatch": (_raw_gguf([_tensor_info("t", [33], 2, 0)]), "Q4_0 row of 33 (blocks of 32)"),
        "tensor_offset_beyond_file": (_raw_gguf([_tensor_info("t", [8], 0, 2**40)]), "tensor offset 2^40"),
        "tensor_offset_wraps": (_raw_gguf([_tensor_info("t", [8], 0, 2**64 - 32)]), "offset + size wraps around 2^64"),
        "tensor_offset_misaligned": (_raw_gguf([_tensor_info("t", [8], 0, 4)]), "offset 4 (alignment 32)"),
        "tensor_overlap": (_raw_gguf([_tensor_info("a", [16], 0, 0), _tensor_info("b", [16], 0, 32)]),
                           "second tensor starts inside the first"),
        "tensor_duplicate_name": (_raw_gguf([_tensor_info("t", [8], 0, 0), _tensor_info("t", [8], 0, 32)]),
                                  "two tensors with the same name"),
        "data_missing": (build_gguf(data=False), "header only, tensor data missing"),
        "garbage_after_magic": (b"GGUF" + bytes((i * 131 + 7) % 256 for i in range(4096)), "magic then pseudo-random bytes"),
    }
    cuts = {
        "mid_version": 6, "after_version": 8, "mid_tensor_count": 12, "after_counts": 24,
        "mid_first_key": 24 + 10, "mid_first_value": lay["first_kv"] - 3, "end_of_kv": lay["kv_end"] - 1,
        "mid_tensor_infos": lay["kv_end"] + 10, "end_of_tensor_infos": lay["info_end"] - 1,
        "mid_data": lay["data_start"] + 40, "last_byte": lay["size"] - 1,
    }
    for label, cut in cuts.items():
        cases[f"truncated_{label}"] = (good[:cut], f"valid file truncated at byte {cut} ({label.replace('_', ' ')})")
    return cases


def _gguf_cases(out: Path) -> List[Case]:
    out.mkdir(parents=True, exist_ok=True)
    cases = []
    for name, (blob, description) in _gguf_blobs().items():
        path = out / f"{name}.gguf"
        path.write_bytes(blob)
        cases.append(Case(f"gguf/{name}", "gguf", path, description))
    directory = out / "directory.gguf"
    directory.mkdir(exist_ok=True)
    cases.append(Case("gguf/directory", "gguf", directory, "a directory named *.gguf"))
    fifo = out / "fifo.gguf"
    if hasattr(os, "mkfifo"):
        if not fifo.exists():
            os.mkfifo(fifo)
        cases.append(Case("gguf/fifo", "gguf", fifo, "a named pipe (opening it would block)"))
    return cases


# ------------------------------------------------------------------------------- ONNX
def _onnx_model(location: Optional[str] = None, offset: Optional[str] = None, length: Optional[str] = None,
                n: int = 4, in_constant: bool = False) -> bytes:
    """A one-op graph (y = x + w) whose w keeps its 4*n bytes in an external file."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((n,), np.float32), "w")
    if location is not None:
        weight.ClearField("raw_data")
        weight.data_location = TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", offset), ("length", length)):
            if value is not None:
                entry = weight.external_data.add()
                entry.key, entry.value = key, value
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])
    if in_constant:
        nodes = [helper.make_node("Constant", [], ["w"], value=weight), helper.make_node("Add", ["x", "w"], ["y"])]
        graph = helper.make_graph(nodes, "g", [x], [y])
    else:
        graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", [x], [y], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model.SerializeToString()


def _onnx_cases(out: Path) -> List[Case]:
    try:
        import onnx  # noqa: F401
    except ImportError:
        return []  # the ONNX cases need the onnx package to be written
    out.mkdir(parents=True, exist_ok=True)
    outside = out / "outside.bin"
    outside.write_bytes(b"\1" * 16)
    weights = b"\0" * 16

    def case(name: str, description: str, blob: bytes, data: Optional[Dict[str, bytes]] = None) -> Case:
        folder = out / name
        folder.mkdir(exist_ok=True)
        for file, content in (data if data is not None else {"weights.bin": weights}).items():
            (folder / file).write_bytes(content)
        (folder / "model.onnx").write_bytes(blob)
        return Case(f"onnx/{name}", "onnx", folder / "model.onnx", description)

    cases = [
        case("garbage", "pseudo-random bytes named model.onnx", bytes((i * 167 + 13) % 256 for i in range(2048))),
        case("empty", "empty model.onnx", b""),
        case("json_text", "a JSON document named model.onnx", b'{"graph": {"node": []}}'),
        case("truncated", "a valid model cut in half", _onnx_model("weights.bin")[:40]),
        case("dotdot", "external data at ../outside.bin (exists)", _onnx_model("../outside.bin")),
        case("dotdot_nested", "external data at sub/../../outside.bin", _onnx_model("sub/../../outside.bin")),
        case("absolute", "external data at an absolute path (/etc/passwd)", _onnx_model("/etc/passwd")),
        case("offset_beyond", "offset 32 in a 16-byte data file", _onnx_model("weights.bin", "32", "16")),
        case("length_beyond", "offset 8 + length 16 in a 16-byte data file", _onnx_model("weights.bin", "8", "16")),
        case("length_2_63", "length 2^63", _onnx_model("weights.bin", "0", str(2**63))),
        case("offset_2_64", "offset 2^64-1", _onnx_model("weights.bin", str(2**64 - 1), "16")),
        case("offset_negative", "offset -8", _onnx_model("weights.bin", "-8", "16")),
        case("length_not_number", "length 'abc'", _onnx_model("weights.bin", "0", "abc")),
        case("length_short", "length 8 for a 16-byte tensor", _onnx_model("weights.bin", "0", "8")),
        case("data_missing", "external data file does not exist", _onnx_model("nope.bin"), data={}),
        case("location_empty", "external data with no location", _onnx_model("")),
        case("ort_mem_addr", "ONNX Runtime's in-memory marker as location", _onnx_model("*/_ORT_MEM_ADDR_/*", "4096", "16")),
        case("constant_dotdot", "a Constant node's tensor with external data at ../outside.bin",
             _onnx_model("../outside.bin", in_constant=True)),
    ]
    folder = out / "location_directory"
    folder.mkdir(exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    (folder / "model.onnx").write_bytes(_onnx_model("data"))
    cases.append(Case("onnx/location_directory", "onnx", folder / "model.onnx", "external data location is a directory"))
    folder = out / "symlink_out"
    folder.mkdir(exist_ok=True)
    link = folder / "weights.bin"
    if not link.is_symlink():
        link.symlink_to(outside)
    (folder / "model.onnx").write_bytes(_onnx_model("weights.bin"))
    cases.append(Case("onnx/symlink_out", "onnx", folder / "model.onnx",
                      "external data file is a symlink to a file outside the model directory"))
    return cases


# ------------------------------------------------------------------------ safetensors
def _safetensors(header: object, data: bytes = b"", length: Optional[int] = None, raw: Optional[bytes] = None) -> bytes:
    text = raw if raw is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + data


def _safetensors_cases(out: Path) -> List[Case]:
    out.mkdir(parents=True, exist_ok=True)
    t = lambda dtype, shape, begin, end: {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}  # noqa: E731
    good = {"a": t("F32", [2, 2], 0, 16), "b": t("F16", [4], 16, 24)}
    data = b"\0" * 24
    blobs = {
        "too_short": (b"\x10\0\0", "3-byte file (no header length)"),
        "header_longer_than_file": (_safetensors(good, data, length=10**6), "header length 10^6 in a tiny file"),
        "header_2_63": (_safetensors(good, data, length=2**63), "header length 2^63"),
        "header_2_64": (_safetensors(good, data, length=2**64 - 1), "header length 2^64-1"),
        "not_json": (_safetensors(None, data, raw=b"{this is not json}"), "header is not JSON"),
        "json_list": (_safetensors(None, data, raw=b"[1, 2, 3]"), "header is a JSON list"),
        "not_utf8": (_safetensors(None, data, raw=b'{"\xff": 1}'), "header bytes not UTF-8"),
        "deeply_nested": (_safetensors(None, data, raw=b'{"a": ' + b"[" * 100000 + b"]" * 100000 + b"}"),
                          "JSON nested 100000 deep"),
        "nan": (_safetensors(None, data, raw=b'{"a": {"dtype": "F32", "shape": [NaN], "data_offsets": [0, 16]}}'),
                "NaN in the shape"),
        "duplicate_key": (_safetensors(None, data, raw=json.dumps(good)[:-1].encode() + b', "a": '
                                       + json.dumps(t("F32", [6], 0, 24)).encode() + b"}"), "the same tensor name twice"),
        "overlap": (_safetensors({"a": t("F32", [4], 0, 16), "b": t("F32", [4], 8, 24)}, data), "two tensors share bytes"),
        "beyond_data": (_safetensors({"a": t("F32", [4], 0, 16), "b": t("F32", [4], 16, 32)}, data), "offsets beyond the data"),
        "offsets_2_64": (_safetensors({"a": t("F32", [4], 2**64 - 16, 2**64)}, data), "offsets near 2^64"),
        "offsets_reversed": (_safetensors({"a": t("F32", [0], 16, 0)}, data), "begin after end"),
        "offsets_strings": (_safetensors({"a": {"dtype": "F32", "shape": [4], "data_offsets": ["0", "16"]}}, data),
                            "offsets as strings"),
        "shape_size_mismatch": (_safetensors({"a": t("F32", [2, 3], 0, 16), "b": t("F16", [4], 16, 24)}, data),
                                "shape 2x3 of F32 in 16 bytes"),
        "unknown_dtype": (_safetensors({"a": t("F128", [1], 0, 16), "b": t("F16", [4], 16, 24)}, data), "dtype F128"),
        "shape_negative": (_safetensors({"a": t("F32", [-4], 0, 16)}, data[:16]), "negative dimension"),
        "shape_overflow": (_safetensors({"a": t("U8", [2**40, 2**40], 0, 16)}, data[:16]), "dims whose product overflows"),
        "gap": (_safetensors({"a": t("F32", [2], 0, 8), "b": t("F32", [2], 16, 24)}, data), "unused bytes between tensors"),
        "metadata_not_strings": (_safetensors(dict(good, __metadata__={"format": 1}), data), "__metadata__ with a number"),
        "missing_fields": (_safetensors({"a": {"dtype": "F32"}}, data), "tensor entry without shape and offsets"),
    }
    cases = []
    for name, (blob, description) in blobs.items():
        folder = out / name
        folder.mkdir(exist_ok=True)
        (folder / "config.json").write_text('{"model_type": "llama", "architectures": ["LlamaForCausalLM"]}')
        (folder / "model.safetensors").write_bytes(blob)
        cases.append(Case(f"safetensors/{name}", "safetensors", folder / "model.safetensors", description))
    return cases


# ------------------------------------------------------------------------- manifests
def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _manifest_cases(out: Path) -> List[Case]:
    out.mkdir(parents=True, exist_ok=True)
    artifact = build_gguf()
    outside = out / "outside.gguf"
    outside.write_bytes(artifact)

    def variant(**changes: object) -> dict:
        entry = {"name": "tiny-f32", "format": "gguf", "quantization": "F32", "file": "tiny.gguf",
                 "sha256": _sha256(artifact), "size_bytes": len(artifact)}
        entry.update(changes)
        return {k: v for k, v in entry.items() if v is not _DROP}

    def manifest(variants: object = None, **changes: object) -> dict:
        data = {"schema_version": 1, "model_name": "tiny", "created_by": "corpus",
                "variants": [variant()] if variants is None else variants, "accuracy_table": []}
        data.update(changes)
        return {k: v for k, v in data.items() if v is not _DROP}

    def bundle(name: str, description: str, content: object, files: Optional[Dict[str, bytes]] = None) -> Case:
        folder = out / name
        folder.mkdir(exist_ok=True)
        for file, data in ({"tiny.gguf": artifact} if files is None else files).items():
            (folder / file).write_bytes(data)
        text = content if isinstance(content, (bytes, str)) else json.dumps(content)
        (folder / "edgert.json").write_bytes(text.encode() if isinstance(text, str) else text)
        return Case(f"manifest/{name}", "manifest", folder, description)

    wrong_sha = "0" * 64
    cases = [
        bundle("path_dotdot", "variant file ../outside.gguf (exists, right hash)", manifest([variant(file="../outside.gguf")])),
        bundle("path_dotdot_nested", "variant file a/../../outside.gguf", manifest([variant(file="a/../../outside.gguf")])),
        bundle("path_absolute", "variant file /etc/passwd", manifest([variant(file="/etc/passwd")])),
        bundle("path_home", "variant file ~/model.gguf", manifest([variant(file="~/model.gguf")])),
        bundle("path_backslash", "variant file ..\\outside.gguf", manifest([variant(file="..\\outside.gguf")])),
        bundle("path_nul", "variant file with a NUL byte", manifest([variant(file="tiny.gguf\x00.txt")])),
        bundle("path_too_long", "variant file name of 300 characters", manifest([variant(file="a" * 300 + ".gguf")])),
        bundle("extra_file_dotdot", "further file (files[]) at ../outside.gguf",
               manifest([variant(files=[{"file": "../outside.gguf", "sha256": _sha256(artifact), "size_bytes": len(artifact)}])])),
        bundle("sha256_wrong", "sha256 of other bytes", manifest([variant(sha256=wrong_sha)])),
        bundle("sha256_uppercase", "sha256 in upper case", manifest([variant(sha256=_sha256(artifact).upper())])),
        bundle("sha256_short", "sha256 of 63 digits", manifest([variant(sha256=_sha256(artifact)[:63])])),
        bundle("size_wrong", "size one byte more than the file", manifest([variant(size_bytes=len(artifact) + 1)])),
        bundle("size_negative", "size -1", manifest([variant(size_bytes=-1)])),
        bundle("size_1e308", "size 1e308 (a float)", manifest([variant(size_bytes=1e308)])),
        bundle("size_2_70", "size 2^70", manifest([variant(size_bytes=2**70)])),
        bundle("size_bool", "size true", manifest([variant(size_bytes=True)])),
        bundle("size_5000_digits", "size with 5000 digits", '{"schema_version": 1, "model_name": "m", "variants": '
               '[{"name": "a", "format": "gguf", "file": "tiny.gguf", "sha256": "' + wrong_sha + '", "size_bytes": '
               + "9" * 5000 + "}]}"),
        bundle("size_nan", "size NaN", json.dumps(manifest()).replace(f'"size_bytes": {len(artifact)}', '"size_bytes": NaN')),
        bundle("schema_version_2", "schema_version 2 (from a newer edgert)", manifest(schema_version=2)),
        bundle("schema_version_float", "schema_version 1e308", manifest(schema_version=1e308)),
        bundle("schema_version_missing", "no schema_version", manifest(schema_version=_DROP)),
        bundle("name_int", "variant name is a number", manifest([variant(name=7)])),
        bundle("name_uppercase_long", "variant name of 200 upper-case letters", manifest([variant(name="A" * 200)])),
        bundle("variants_object", "variants is an object", manifest({"tiny-f32": variant()})),
        bundle("variants_strings", "variants are strings", manifest(["tiny.gguf"])),
        bundle("variant_duplicate_name", "two variants with the same name", manifest([variant(), variant(file="other.gguf")]),
               files={"tiny.gguf": artifact, "other.gguf": artifact}),
        bundle("variant_same_file", "two variants pointing at the same file", manifest([variant(), variant(name="b")])),
        bundle("format_unknown", "format 'exe'", manifest([variant(format="exe")])),
        bundle("quantization_list", "quantization is a list", manifest([variant(quantization=["Q4"])])),
        bundle("tensorrt_engine_string", "TensorRT variant whose compatibility key is a string",
               manifest([variant(format="tensorrt", file="model.engine", engine="any")]), files={"model.engine": artifact}),
        bundle("model_name_missing", "no model_name", manifest(model_name=_DROP)),
        bundle("accuracy_table_strings", "accuracy_table of strings", manifest(accuracy_table=["fast"])),
        bundle("duplicate_key", "sha256 given twice (parsers disagree on which wins)",
               json.dumps(manifest()).replace('"sha256"', f'"sha256": "{wrong_sha}", "sha256"', 1)),
        bundle("invalid_json", "truncated JSON", json.dumps(manifest())[:-7]),
        bundle("not_utf8", "manifest bytes not UTF-8", b'{"schema_version": 1, "model_name": "\xff\xfe"}'),
        bundle("json_list", "manifest is a JSON list", "[1, 2, 3]"),
        bundle("deeply_nested", "JSON nested 100000 deep", '{"schema_version": 1, "x": ' + "[" * 100000 + "]" * 100000 + "}"),
        bundle("empty", "empty manifest", ""),
        bundle("huge", "manifest of 17 MB (limit 16 MB)",
               '{"schema_version": 1, "model_name": "' + "m" * (17 * 1024 * 1024) + '", "variants": []}'),
        bundle("artifact_missing", "manifest names a file that is not there", manifest(), files={}),
    ]
    # file-system shapes that a JSON mutation cannot express
    folder = out / "symlink_out"
    folder.mkdir(exist_ok=True)
    (folder / "edgert.json").write_text(json.dumps(manifest([variant(file="link.gguf")])))
    if not (folder / "link.gguf").is_symlink():
        (folder / "link.gguf").symlink_to(outside)
    cases.append(Case("manifest/symlink_out", "manifest", folder, "artifact is a symlink to a file outside the bundle (right hash)"))
    folder = out / "symlink_loop"
    folder.mkdir(exist_ok=True)
    (folder / "edgert.json").write_text(json.dumps(manifest([variant(file="loop.gguf")])))
    if not (folder / "loop.gguf").is_symlink():
        (folder / "loop.gguf").symlink_to("loop.gguf")
    cases.append(Case("manifest/symlink_loop", "manifest", folder, "artifact is a symlink to itself"))
    folder = out / "artifact_directory"
    folder.mkdir(exist_ok=True)
    (folder / "edgert.json").write_text(json.dumps(manifest()))
    (folder / "tiny.gguf").mkdir(exist_ok=True)
    cases.append(Case("manifest/artifact_directory", "manifest", folder, "artifact path is a directory"))
    folder = out / "manifest_directory"
    (folder / "edgert.json").mkdir(parents=True, exist_ok=True)
    cases.append(Case("manifest/manifest_directory", "manifest", folder, "edgert.json is a directory"))
    if hasattr(os, "mkfifo"):
        folder = out / "artifact_fifo"
        folder.mkdir(exist_ok=True)
        (folder / "edgert.json").write_text(json.dumps(manifest()))
        if not (folder / "tiny.gguf").exists():
            os.mkfifo(folder / "tiny.gguf")
        cases.append(Case("manifest/artifact_fifo", "manifest", folder, "artifact is a named pipe"))
    return cases


class _Drop:
    def __repr__(self) -> str:
        return "<drop>"


_DROP = _Drop()


def build_corpus(out_dir: Path) -> List[Case]:
    """Write every malformed case under ``out_dir`` (one folder per kind) and list them."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return (_gguf_cases(out_dir / "gguf") + _onnx_cases(out_dir / "onnx")
            + _safetensors_cases(out_dir / "safetensors") + _manifest_cases(out_dir / "manifest"))


# --------------------------------------------------------------------------- loaders
def _load_gguf(path: Path) -> None:
    from edgert.errors import EdgertError
    from edgert.formats.gguf import read_header
    from edgert.runners.llama_cpp import LlamaCppRunner

    try:
        read_header(path)
    except EdgertError:
        # refused by the header reader: the runner must refuse it too, before llama.cpp sees it
        runner = LlamaCppRunner(path, n_ctx=64, n_threads=1)
        try:
            runner.load()
        finally:
            runner.close()
        raise AssertionError(f"LlamaCppRunner loaded {path}, which read_header refused")
    _load_gguf_in_child(path)


def _load_gguf_in_child(path: Path) -> None:
    """The header reader accepted the file: let llama.cpp try in a child process (crash-safe)."""
    from edgert.errors import ModelFileError

    code = (
        "import sys\n"
        "from edgert.errors import EdgertError\n"
        "from edgert.runners.llama_cpp import LlamaCppRunner\n"
        "try:\n"
        "    LlamaCppRunner(sys.argv[1], n_ctx=64, n_threads=1).load()\n"
        "except EdgertError as exc:\n"
        "    print(type(exc).__name__ + ': ' + str(exc)); sys.exit(3)\n"
    )
    child = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                           timeout=60, cwd=str(REPO_DIR))
    if child.returncode == 3:
        raise ModelFileError(child.stdout.strip().split(": ", 1)[-1])
    if child.returncode != 0:
        raise RuntimeError(f"llama.cpp load of {path} ended with exit code {child.returncode}: {child.stderr[-300:]}")


def _load_onnx(path: Path) -> None:
    from edgert.runners.onnxruntime import OnnxRuntimeRunner

    runner = OnnxRuntimeRunner(path, n_ctx=64, n_threads=1)
    try:
        runner.load()
    finally:
        runner.close()


def _load_safetensors(path: Path) -> None:
    from edgert.converters.source import resolve_source
    from edgert.errors import EdgertError
    from edgert.formats.safetensors import read_safetensors_header

    try:
        read_safetensors_header(path)
    except EdgertError:
        with tempfile.TemporaryDirectory() as work:
            resolve_source(path.parent, Path(work))  # the convert path must refuse it too
        raise AssertionError(f"resolve_source accepted {path.parent}, which read_safetensors_header refused")


def _load_manifest(path: Path) -> None:
    from edgert.bundle import Bundle

    Bundle.open(path).verify()


LOADERS: Dict[str, Callable[[Path], None]] = {
    "gguf": _load_gguf, "onnx": _load_onnx, "safetensors": _load_safetensors, "manifest": _load_manifest,
}
_warmed = False


def _warm_up() -> None:
    """Import everything the loaders import, so imports are not measured as the case's memory."""
    global _warmed
    if _warmed:
        return
    import mmap  # noqa: F401

    import edgert.bundle  # noqa: F401
    import edgert.converters.base  # noqa: F401
    import edgert.formats.gguf  # noqa: F401
    import edgert.formats.safetensors  # noqa: F401
    import edgert.runners.llama_cpp  # noqa: F401

    try:
        import edgert.runners.onnxruntime  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        pass
    _warmed = True


class _Timeout(BaseException):
    pass


def check_case(case: Case, timeout_s: float = DEFAULT_TIMEOUT_S) -> Outcome:
    """Feed one case to edgert's loader for its kind; measure time and extra memory.

    ``rejected`` is True only for an ``EdgertError``; any other exception (a bug) is
    reported with its type. In the main thread a hang is cut after ``timeout_s`` (SIGALRM).
    """
    from edgert.errors import EdgertError

    _warm_up()
    loader = LOADERS[case.kind]
    gc.collect()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    use_alarm = threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")
    previous = None
    if use_alarm:
        def on_alarm(signum, frame):
            raise _Timeout()
        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
    tracemalloc.start()
    start = time.perf_counter()
    rejected, error_type, message = False, "", ""
    try:
        loader(case.path)
    except EdgertError as exc:
        rejected, error_type, message = True, type(exc).__name__, str(exc)
    except _Timeout:
        error_type, message = "Timeout", f"no answer within {timeout_s} s"
    except Exception as exc:  # a bug: reported, not raised, so a corpus run sees every case
        error_type, message = type(exc).__name__, str(exc)
    finally:
        seconds = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    rss_growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) * 1024  # KiB on Linux
    extra_mb = max(peak, rss_growth) / 2**20
    return Outcome(case.name, case.kind, rejected, error_type, message, seconds, extra_mb)


def main(argv: List[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python tests/reliability/corpus.py OUT_DIR\n")
        return 2
    cases = build_corpus(Path(argv[0]))
    counts: Dict[str, int] = {}
    for case in cases:
        counts[case.kind] = counts.get(case.kind, 0) + 1
        outcome = check_case(case)
        verdict = "refused" if outcome.rejected else "NOT REFUSED"
        sys.stdout.write(f"{case.name:45} {verdict:11} {outcome.seconds * 1000:8.1f} ms {outcome.extra_memory_mb:6.1f} MB  "
                         f"{outcome.error_type}: {outcome.message[:160]}\n")
    sys.stdout.write(f"{len(cases)} cases: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
