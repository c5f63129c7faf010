"""Skip device tests on machines without the hardware they name."""

import shutil
from pathlib import Path

import pytest


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
