"""edgert: an edge-deployment runtime and packaging tool for language models.

The embeddable library: bundles, runners (backends), the runtime. Light dependencies only.
"""

__version__ = "0.1.0"

from .errors import EdgertError  # noqa: E402
from .bundle import Bundle  # noqa: E402
from .runtime import Runtime, RuntimeResult  # noqa: E402
from .runners.types import CancelToken, Deadline, GenerationResult, SamplingParams  # noqa: E402

__all__ = [
    "__version__", "Bundle", "CancelToken", "Deadline", "EdgertError", "GenerationResult",
    "Runtime", "RuntimeResult", "SamplingParams",
]
