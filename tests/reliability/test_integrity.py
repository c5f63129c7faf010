"""A single flipped byte anywhere in any artifact file of a bundle is refused before an
engine deserializes it, and a TensorRT engine is only loaded when its bytes match the
manifest's sha256."""

import hashlib
import shutil
from pathlib import Path

import pytest

from edgert.bundle import Bundle, Variant, pack
from edgert.errors import IntegrityError, ModelFileError
from edgert.runners import llama_cpp, onnxruntime, tensorrt
from edgert.runners.registry import open_runner

from gguf_factory import write_gguf

ENGINE_KEY = {"tensorrt": "10.3.0.30", "compute_capability": "8.7", "gpu_name": "Orin", "l4t": "36.4.0",
              "jetpack": "6.1", "platform": "linux-aarch64", "hardware_compatibility": "none", "version_compatible": False}


def entry(root: Path, file: str) -> dict:
    data = (root / file).read_bytes()
    return {"file": file, "sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)}


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    """A bundle with a GGUF variant (packed), an ONNX variant with external data and a
    tokenizer, and a TensorRT engine variant."""
    base = tmp_path_factory.mktemp("integrity")
    source = write_gguf(base / "tiny-model-f32.gguf")
    root = base / "bundle"
    bundle = pack([source], root, model_name="tiny")
    (root / "onnx").mkdir()
    (root / "onnx" / "model.onnx").write_bytes(b"\x08\x07" + bytes(range(256)) * 4)
    (root / "onnx" / "model.onnx_data").write_bytes(bytes(range(256)) * 16)
    (root / "onnx" / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": {}}}')
    (root / "model.engine").write_bytes(b"ENGINE" + bytes(range(256)) * 8)
    onnx_main = entry(root, "onnx/model.onnx")
    bundle.manifest.variants.append(Variant(
        name="tiny-onnx", format="onnx", quantization="fp32", file=onnx_main["file"], sha256=onnx_main["sha256"],
        size_bytes=onnx_main["size_bytes"], files=[entry(root, "onnx/model.onnx_data"), entry(root, "onnx/tokenizer.json")]))
    engine = entry(root, "model.engine")
    bundle.manifest.variants.append(Variant(
        name="tiny-trt", format="tensorrt", quantization="fp16", file=engine["file"], sha256=engine["sha256"],
        size_bytes=engine["size_bytes"], extra={"engine": ENGINE_KEY}))
    bundle.save_manifest()
    Bundle.open(root).verify()
    return root


def artifact_files(root: Path):
    bundle = Bundle.open(root)
    return [(variant.name, item["file"]) for variant in bundle.variants for item in variant.all_files()]


@pytest.fixture
def no_engine(monkeypatch):
    """Every engine's loader fails the test if it is reached."""
    def reached(self):
        raise AssertionError(f"{type(self).__name__} started loading a corrupt artifact")

    for cls in (llama_cpp.LlamaCppRunner, onnxruntime.OnnxRuntimeRunner, tensorrt.TensorRTRunner):
        monkeypatch.setattr(cls, "_load_impl", reached)


def flip(path: Path, where: str) -> int:
    data = bytearray(path.read_bytes())
    index = {"start": 0, "middle": len(data) // 2, "end": len(data) - 1}[where]
    data[index] ^= 0x01
    path.write_bytes(bytes(data))
    return index


def test_the_bundle_has_every_kind_of_artifact(bundle_dir):
    files = artifact_files(bundle_dir)
    assert {name for name, _ in files} == {"tiny-model-f32", "tiny-onnx", "tiny-trt"}
    assert len(files) == 5


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_a_flipped_byte_in_any_artifact_file_is_refused_before_loading(bundle_dir, tmp_path, where, no_engine):
    for variant_name, file in artifact_files(bundle_dir):
        copy = tmp_path / f"{variant_name}-{Path(file).name}"
        shutil.copytree(bundle_dir, copy)
        index = flip(copy / file, where)
        bundle = Bundle.open(copy)  # same size: opening alone cannot tell
        variant = bundle.variant(variant_name)
        with pytest.raises(IntegrityError, match="sha256 of .* manifest says"):
            bundle.verify()
        with pytest.raises(IntegrityError, match=f"sha256 of '{file}'"):
            open_runner(bundle, variant, n_ctx=64, n_threads=1)  # the path runtime and profiler take
        flip(copy / file, where)  # the same byte back: accepted again
        assert open_runner(Bundle.open(copy), variant, n_ctx=64, n_threads=1).model_path == (copy / variant.file).resolve(), index


def test_a_file_changed_after_verification_is_hashed_again(bundle_dir, tmp_path, no_engine):
    copy = tmp_path / "b"
    shutil.copytree(bundle_dir, copy)
    bundle = Bundle.open(copy)
    variant = bundle.variant("tiny-model-f32")
    bundle.verify()
    flip(copy / variant.file, "middle")
    with pytest.raises(IntegrityError):
        open_runner(bundle, variant, n_ctx=64, n_threads=1)


def test_a_flipped_byte_in_the_real_smollm2_bundle_is_refused(smollm2_bundle, tmp_path, no_engine):
    copy = tmp_path / "smollm2"
    shutil.copytree(smollm2_bundle, copy)
    bundle = Bundle.open(copy)
    variant = bundle.variant()
    flip(copy / variant.file, "middle")
    with pytest.raises(IntegrityError):
        open_runner(bundle, variant, n_ctx=64, n_threads=1)


class FakeTensorRT:
    """Just enough of tensorrt for TensorRTRunner._load_impl to reach deserialization."""

    def __init__(self):
        self.deserialized = []
        fake = self

        class ILogger:
            class Severity:
                INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

            def __init__(self):
                pass

        class Runtime:
            def __init__(self, logger):
                pass

            def deserialize_cuda_engine(self, data):
                fake.deserialized.append(bytes(data))
                return None

        self.ILogger, self.Runtime = ILogger, Runtime


@pytest.fixture
def fake_trt(monkeypatch):
    trt = FakeTensorRT()
    monkeypatch.setattr(tensorrt, "_import_tensorrt", lambda: trt)
    monkeypatch.setattr(tensorrt.CudaRuntime, "load", classmethod(lambda cls: object()))
    monkeypatch.setattr(tensorrt, "HfTokenizer", lambda folder: object())
    monkeypatch.setattr(tensorrt, "compatibility_key", lambda **kw: dict(ENGINE_KEY))
    return trt


def test_tensorrt_engine_is_deserialized_only_when_its_sha256_matches(bundle_dir, tmp_path, fake_trt):
    bundle = Bundle.open(bundle_dir)
    variant = bundle.variant("tiny-trt")
    runner = open_runner(bundle, variant, n_ctx=64, n_threads=1)
    assert runner.engine_key == ENGINE_KEY
    with pytest.raises(ModelFileError, match="TensorRT could not deserialize model.engine"):
        runner.load()
    assert [hashlib.sha256(b).hexdigest() for b in fake_trt.deserialized] == [variant.sha256]

    copy = tmp_path / "b"
    shutil.copytree(bundle_dir, copy)
    flip(copy / "model.engine", "end")
    bundle = Bundle.open(copy)
    with pytest.raises(IntegrityError):
        open_runner(bundle, bundle.variant("tiny-trt"), n_ctx=64, n_threads=1)
    assert len(fake_trt.deserialized) == 1  # the corrupt engine never reached TensorRT
