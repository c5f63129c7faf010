"""Skip device tests on machines without the hardware they name."""

import os
import shutil
from pathlib import Path

import pytest

from edgert.errors import EdgertError
from edgert.models import packaged_model_path


def has_nvidia_gpu() -> bool:
    # JetPack 5 boards have neither nvidia-smi nor /dev/nvidia0
    return shutil.which("nvidia-smi") is not None or Path("/dev/nvidia0").exists() or is_jetson()


def is_jetson() -> bool:
    return Path("/etc/nv_tegra_release").exists()


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "gpu" in item.keywords and not has_nvidia_gpu():
            item.add_marker(pytest.mark.skip(reason="needs an NVIDIA GPU"))
        if "jetson" in item.keywords and not is_jetson():
            item.add_marker(pytest.mark.skip(reason="needs a Jetson board"))


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs an NVIDIA GPU (or Jetson)")
    config.addinivalue_line("markers", "jetson: needs a Jetson board")


@pytest.fixture(scope="session")
def device_model() -> Path:
    """The GGUF the GPU tests run: $EDGERT_DEVICE_MODEL (``run.py --model``), else the
    packaged SmolLM2 when it is installed; the test skips when neither exists."""
    explicit = os.environ.get("EDGERT_DEVICE_MODEL")
    if explicit:
        return Path(explicit)
    try:
        return packaged_model_path()
    except EdgertError as exc:
        pytest.skip(f"no model for the GPU tests (pass --model FILE.gguf): {exc}")
