"""edgert: an edge-deployment runtime and packaging tool for language models.

The embeddable library: bundles, runners (backends), the runtime. Light dependencies only.
"""

from .version import __version__  # first: modules still importing it from the package root need it set
from .bundle import Bundle  # noqa: E402
from .errors import EdgertError  # noqa: E402
from .request import Request  # noqa: E402
from .result import RuntimeResult  # noqa: E402
from .runners.types import CancelToken, Deadline, GenerationResult, SamplingParams  # noqa: E402
from .runtime import Runtime  # noqa: E402

__all__ = [
    "__version__", "Bundle", "CancelToken", "Deadline", "EdgertError", "GenerationResult",
    "Request", "Runtime", "RuntimeResult", "SamplingParams",
]
