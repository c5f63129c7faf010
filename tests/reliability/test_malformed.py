"""Every file of the malformed corpus is refused by edgert's real loaders: an EdgertError
(never another exception, a crash or a hang), within 1 s and 64 MB, with a one-line
message that says what was expected and what was found. Valid files still load."""

import json
import re
import struct
from collections import Counter

import numpy as np
import pytest

from corpus import KINDS, build_corpus, check_case
from edgert.errors import EdgertError, ModelFileError

MAX_SECONDS = 1.0
MAX_EXTRA_MB = 64.0
MIN_CASES = {"gguf": 40, "onnx": 15, "safetensors": 15, "manifest": 30}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_corpus(tmp_path_factory.mktemp("corpus"))


def problems_of(outcome) -> list:
    found = []
    if not outcome.rejected:
        found.append(f"not refused with an EdgertError ({outcome.error_type}: {outcome.message[:200]})")
    if outcome.seconds > MAX_SECONDS:
        found.append(f"took {outcome.seconds:.2f} s")
    if outcome.extra_memory_mb > MAX_EXTRA_MB:
        found.append(f"used {outcome.extra_memory_mb:.1f} MB extra")
    message = outcome.message
    if "\n" in message or "\r" in message or len(message) > 600:
        found.append(f"message is not one short line: {message[:200]!r}")
    if not (re.search(r"\bexpected\b", message) and re.search(r"\bfound\b", message)):
        found.append(f"message does not say what was expected and found: {message!r}")
    return found


def test_corpus_has_every_kind(corpus):
    counts = Counter(case.kind for case in corpus)
    assert set(counts) == set(KINDS)
    assert all(counts[kind] >= n for kind, n in MIN_CASES.items()), counts
    assert len(corpus) >= 50
    assert len({case.name for case in corpus}) == len(corpus)


@pytest.mark.parametrize("kind", KINDS)
def test_every_malformed_file_is_refused_quickly_with_a_clear_error(corpus, kind, monkeypatch):
    if kind == "gguf":
        import edgert.runners.llama_cpp as llama

        def engine_reached():
            raise AssertionError("llama.cpp was reached with a malformed file")

        monkeypatch.setattr(llama, "_llama_cpp", engine_reached)  # the header check must refuse first
    if kind == "onnx":
        ort = pytest.importorskip("onnxruntime")

        def session(*args, **kwargs):
            raise AssertionError("ONNX Runtime was given a malformed model")

        monkeypatch.setattr(ort, "InferenceSession", session)
    failures = {}
    for case in (c for c in corpus if c.kind == kind):
        problems = problems_of(check_case(case))
        if problems:
            failures[case.name] = problems
    assert not failures, json.dumps(failures, indent=1)


# ------------------------------------------------------------ valid files still load
def test_valid_gguf_passes_the_same_checks(tmp_path):
    from gguf_factory import build_gguf

    from edgert.formats.gguf import read_header

    path = tmp_path / "ok.gguf"
    path.write_bytes(build_gguf())
    header = read_header(path)
    assert [t.name for t in header.tensors] == ["token_embd.weight", "output_norm.weight"]


def test_real_smollm2_header_passes_the_extent_checks(smollm2_path):
    from edgert.formats.gguf import read_header

    header = read_header(smollm2_path)
    assert len(header.tensors) > 100 and header.data_offset < header.file_size


def test_valid_safetensors_pass_and_agree_with_the_reference_reader(tmp_path):
    from safetensors.numpy import load_file, save_file

    from edgert.formats.safetensors import read_safetensors_header

    tensors = {"a": np.ones((3, 4), np.float32), "b": np.zeros((5,), np.float16), "empty": np.zeros((0, 2), np.int64),
               "flag": np.ones((2,), np.bool_)}
    path = tmp_path / "m.safetensors"
    save_file(tensors, str(path), metadata={"format": "np"})
    header = read_safetensors_header(path)
    assert header.metadata == {"format": "np"}
    assert {n: (t.dtype, t.shape) for n, t in header.tensors.items()} == {
        "a": ("F32", [3, 4]), "b": ("F16", [5]), "empty": ("I64", [0, 2]), "flag": ("BOOL", [2])}
    assert header.parameter_count == 12 + 5 + 2
    assert set(load_file(str(path))) == set(tensors)


def test_resolve_source_checks_safetensors_before_anything_loads_them(tmp_path):
    from edgert.converters.source import resolve_source

    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", 2**63) + b"{}")
    with pytest.raises(ModelFileError, match=r"expected a header length of at most 2 \(the bytes that follow\), found 9223372036854775808"):
        resolve_source(tmp_path, tmp_path / "work")


def external_model(folder, n_tensors=3):
    """A small model whose initializers and a Constant node's tensor are saved as external data."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.full((64,), i, np.float32), f"w{i}") for i in range(n_tensors)]
    const = numpy_helper.from_array(np.arange(64, dtype=np.float32), "c")
    nodes = [helper.make_node("Constant", [], ["c"], value=const)]
    last = "x"
    for i in range(n_tensors):
        nodes.append(helper.make_node("Add", [last, f"w{i}"], [f"h{i}"]))
        last = f"h{i}"
    nodes.append(helper.make_node("Add", [last, "c"], ["y"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / "model.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx_data", size_threshold=0)
    return path


def test_valid_external_data_passes_and_onnx_runtime_loads_it(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from edgert.formats.onnx import check_external_data

    import onnx
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    path = external_model(tmp_path)
    model = onnx.load(str(path), load_external_data=False)
    assert check_external_data(path) == sum(uses_external_data(t) for t in _get_all_tensors(model)) == 3
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {"x": np.zeros(64, np.float32)})[0]
    assert np.allclose(out, 0 + 1 + 2 + np.arange(64))


def test_external_data_in_a_subgraph_is_checked(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    from onnx.external_data_helper import set_external_data

    from edgert.formats.onnx import check_external_data

    weight = numpy_helper.from_array(np.ones((4,), np.float32), "w")
    set_external_data(weight, "/etc/passwd")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    branch = helper.make_graph([helper.make_node("Constant", [], ["y"], value=weight)], "then", [], [out])
    other = helper.make_graph([helper.make_node("Constant", [], ["y"], value=numpy_helper.from_array(
        np.zeros((4,), np.float32)))], "else", [], [out])
    node = helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=other)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])], [out])
    path = tmp_path / "model.onnx"
    onnx.save_model(helper.make_model(graph), str(path))
    with pytest.raises(ModelFileError, match="expected a file inside .* found location '/etc/passwd'"):
        check_external_data(path)


def test_valid_bundle_opens_and_verifies(tmp_path):
    from gguf_factory import write_gguf

    from edgert.bundle import Bundle, pack

    source = write_gguf(tmp_path / "tiny.gguf")
    pack([source], tmp_path / "bundle", model_name="tiny")
    Bundle.open(tmp_path / "bundle").verify()


def test_check_case_reports_bugs_instead_of_raising(tmp_path):
    from corpus import Case, LOADERS, check_case

    def buggy(path):
        raise KeyError("boom")

    case = Case("x", "gguf", tmp_path, "")
    original = LOADERS["gguf"]
    LOADERS["gguf"] = buggy
    try:
        outcome = check_case(case)
    finally:
        LOADERS["gguf"] = original
    assert not outcome.rejected and outcome.error_type == "KeyError"
    assert isinstance(ModelFileError("x"), EdgertError)
