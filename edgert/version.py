"""The package version, in one place (modules import it from here, not from the package root,
so that no module imports ``edgert/__init__`` back), and the installed version of another
distribution (the engines edgert checks: llama-cpp-python, the ONNX Runtime wheels)."""

import importlib.metadata
from typing import Optional

__version__ = "0.1.0"


def distribution_version(name: str) -> Optional[str]:
    """The installed version of distribution ``name`` (e.g. "onnxruntime-gpu"); None if absent."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
