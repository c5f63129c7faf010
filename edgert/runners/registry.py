"""Which runner runs which format, and how a bundle variant becomes an unloaded runner.

Each runner module registers its class on import (``Runner.__init_subclass__``); the engines
themselves (llama-cpp-python, onnxruntime, tensorrt) are imported only when a model loads.
"""

from __future__ import annotations

from typing import Optional, Type

from .. import formats
from ..bundle import Bundle, Variant
from ..errors import EdgertError
from . import llama_cpp, onnxruntime, tensorrt  # noqa: F401  (each registers its runner)
from .base import Runner


def runner_for(fmt: str) -> Type[Runner]:
    """The runner class registered for an artifact format."""
    if fmt not in Runner.registry:
        raise EdgertError(f"no runner for format {fmt!r}; available: {sorted(Runner.registry)}")
    return Runner.registry[fmt]


def open_runner(bundle: Bundle, variant: Variant, *, n_ctx: int, n_threads: Optional[int]) -> Runner:
    """An unloaded runner for a bundle variant; the artifact's sha256 is checked first, and
    the options its format takes from the manifest (a TensorRT engine's compatibility key)
    are passed along."""
    path = bundle.artifact(variant)
    return runner_for(variant.format)(path, n_ctx=n_ctx, n_threads=n_threads, **formats.runner_options(variant))
