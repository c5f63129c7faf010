"""Which converter writes which target format.

Each converter module registers its class on import (``Converter.__init_subclass__``); their
heavy engines (torch, transformers, optimum, tensorrt) are imported only when they convert.
"""

from __future__ import annotations

from typing import List

from edgert.errors import UsageError

from . import gguf_convert, onnx_convert, tensorrt_convert  # noqa: F401  (each registers its converter)
from .base import Converter


def targets() -> List[str]:
    """The target formats ``edgert convert --to`` accepts."""
    return sorted(Converter.registry)


def converter_for(target: str) -> Converter:
    """A converter for ``target``; a UsageError naming the known targets otherwise."""
    if target not in Converter.registry:
        raise UsageError(f"--to {target!r}: expected one of {', '.join(targets())}")
    return Converter.registry[target]()
