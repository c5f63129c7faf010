"""Property tests: edgert's parsers answer any input with a result or an EdgertError.

parse_manifest gets arbitrary JSON values and mutations of a valid manifest; the GGUF,
safetensors and ONNX-external-data readers get truncated and byte-mutated valid files.
A parser that accepts something must also be able to use it (derived GGUF fields,
manifest round trip, the reference safetensors reader agreeing).
"""

import copy
import json
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgert.bundle.manifest import Manifest, parse_manifest
from edgert.errors import EdgertError

from gguf_factory import build_gguf

SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80)
                | st.floats(allow_nan=False) | st.text(max_size=40))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=5), max_leaves=25)

VALID_MANIFEST = {
    "schema_version": 1,
    "model_name": "tiny",
    "created_by": "test",
    "variants": [
        {"name": "tiny-q4", "format": "gguf", "quantization": "Q4_0", "file": "tiny-q4.gguf", "sha256": "a" * 64,
         "size_bytes": 10, "parameter_count": 5, "context_length": 256, "tokenizer": {"model": "gpt2"},
         "provenance": {"source": "x"}},
        {"name": "tiny-onnx", "format": "onnx", "quantization": "fp32", "file": "onnx/model.onnx", "sha256": "b" * 64,
         "size_bytes": 20, "files": [{"file": "onnx/model.onnx_data", "sha256": "c" * 64, "size_bytes": 30}]},
    ],
    "accuracy_table": [{"variant": "tiny-q4", "accuracy": 0.5}],
}
FIELD_PATHS = [("schema_version",), ("model_name",), ("created_by",), ("variants",), ("accuracy_table",)] + [
    ("variants", i, key) for i in (0, 1) for key in
    ("name", "format", "quantization", "file", "sha256", "size_bytes", "parameter_count", "context_length",
     "tokenizer", "provenance", "files", "chat_template", "quality_gate", "engine")
] + [("variants", 1, "files", 0, key) for key in ("file", "sha256", "size_bytes")]


def parse_or_refuse(text: str):
    try:
        manifest = parse_manifest(text)
    except EdgertError as exc:
        assert "\n" not in str(exc)
        return None
    assert isinstance(manifest, Manifest)
    again = parse_manifest(manifest.to_json())  # what edgert accepts, it can write and read back
    assert again.to_dict() == manifest.to_dict()
    return manifest


def test_the_valid_manifest_parses():
    assert parse_or_refuse(json.dumps(VALID_MANIFEST)) is not None


@SETTINGS
@given(json_values)
def test_parse_manifest_on_arbitrary_json(value):
    parse_or_refuse(json.dumps(value))


@SETTINGS
@given(st.text(max_size=200))
def test_parse_manifest_on_arbitrary_text(text):
    parse_or_refuse(text)


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(FIELD_PATHS), st.one_of(json_values, st.just("<delete>"))), min_size=1, max_size=4))
def test_parse_manifest_on_mutated_manifests(mutations):
    data = copy.deepcopy(VALID_MANIFEST)
    for path, value in mutations:
        target = data
        for step in path[:-1]:
            try:
                target = target[step]
            except (KeyError, IndexError, TypeError):
                target = None
                break
        if not isinstance(target, (dict, list)):
            continue
        key = path[-1]
        if isinstance(target, list) and (not isinstance(key, int) or key >= len(target)):
            continue
        if isinstance(target, dict) and isinstance(key, int):
            continue
        if value == "<delete>":
            if isinstance(target, dict):
                target.pop(key, None)
        else:
            target[key] = value
    parse_or_refuse(json.dumps(data))


@SETTINGS
@given(st.data())
def test_parse_manifest_on_mutated_json_text(data):
    text = json.dumps(VALID_MANIFEST)
    cut = data.draw(st.integers(0, len(text)))
    insert = data.draw(st.text(max_size=8))
    drop = data.draw(st.integers(0, 8))
    parse_or_refuse(text[:cut] + insert + text[cut + drop:])


# ----------------------------------------------------------------------- binary files
def mutate(blob: bytes, data) -> bytes:
    """Truncate, flip bytes, or overwrite a 4/8-byte field with an extreme value."""
    kind = data.draw(st.sampled_from(["truncate", "flip", "u64", "u32", "insert"]))
    at = data.draw(st.integers(0, max(len(blob) - 1, 0)))
    if kind == "truncate":
        return blob[:at]
    if kind == "flip":
        flips = data.draw(st.lists(st.tuples(st.integers(0, len(blob) - 1), st.integers(1, 255)), min_size=1, max_size=4))
        out = bytearray(blob)
        for pos, mask in flips:
            out[pos] ^= mask
        return bytes(out)
    if kind == "insert":
        return blob[:at] + data.draw(st.binary(min_size=1, max_size=16)) + blob[at:]
    size = 8 if kind == "u64" else 4
    value = data.draw(st.sampled_from([0, 1, 3, 2**31, 2**32 - 1, 2**63, 2**64 - 1, 65536, len(blob)]))
    return blob[:at] + (value % 2 ** (8 * size)).to_bytes(size, "little") + blob[at + size:]


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


GGUF_SEEDS = [build_gguf(), build_gguf(tensors=[("a", [64, 2], 1), ("b", [32], 2)]), build_gguf(tensors=[])]


@SETTINGS
@given(st.sampled_from(GGUF_SEEDS), st.data())
def test_gguf_reader_on_mutated_files(scratch, seed, data):
    from edgert.formats.gguf import read_header

    path = scratch / "m.gguf"
    path.write_bytes(mutate(seed, data))
    try:
        header = read_header(path)
    except EdgertError as exc:
        assert "\n" not in str(exc)
        return
    # an accepted header is usable: every derived field works
    header.quantization, header.context_length, header.chat_template, header.architecture
    header.tokenizer_info()
    assert header.parameter_count >= 0
    for tensor in header.tensors:
        assert tensor.offset + tensor.n_bytes <= header.file_size - header.data_offset


def safetensors_seed() -> bytes:
    from safetensors.numpy import save

    return save({"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(4, np.int8),
                 "c": np.zeros(3, np.float16)}, metadata={"k": "v"})


@SETTINGS
@given(st.data())
def test_safetensors_reader_on_mutated_files_agrees_with_the_reference(scratch, data):
    from safetensors.numpy import load_file

    from edgert.formats.safetensors import read_safetensors_header

    path = scratch / "m.safetensors"
    path.write_bytes(mutate(safetensors_seed(), data))
    try:
        header = read_safetensors_header(path)
    except EdgertError as exc:
        assert "\n" not in str(exc)
        return
    loaded = load_file(str(path))  # edgert accepted it: the reference reader must load it too
    assert set(loaded) == set(header.tensors)


@SETTINGS
@given(st.data())
def test_onnx_external_data_check_on_mutated_models(scratch, data):
    pytest.importorskip("onnx")
    from test_malformed import external_model

    from edgert.formats.onnx import check_external_data

    folder = scratch / "onnx"
    if not (folder / "seed.onnx").exists():
        folder.mkdir(exist_ok=True)
        os.replace(external_model(folder), folder / "seed.onnx")
    path = folder / "model.onnx"
    path.write_bytes(mutate((folder / "seed.onnx").read_bytes(), data))
    try:
        assert check_external_data(path) >= 0
    except EdgertError as exc:
        assert "\n" not in str(exc)


def test_gguf_seeds_are_valid(scratch):
    from edgert.formats.gguf import read_header

    for i, seed in enumerate(GGUF_SEEDS):
        (scratch / f"seed{i}.gguf").write_bytes(seed)
        read_header(scratch / f"seed{i}.gguf")
    assert struct.unpack("<I", GGUF_SEEDS[0][4:8])[0] == 3
