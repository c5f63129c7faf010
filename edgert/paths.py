"""Where edgert keeps its caches: one root, ``$XDG_CACHE_HOME/edgert`` (default ``~/.cache/edgert``).

Every cache (the demo's bundles and profiles, assembled model files) lives under it, so a
user who moves caches with ``XDG_CACHE_HOME`` moves edgert's too. The variable is read at
each call, not at import.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "XDG_CACHE_HOME"


def cache_dir(*parts: str) -> Path:
    """``$XDG_CACHE_HOME/edgert/<parts>``; a relative or empty XDG_CACHE_HOME is ignored, as the
    XDG base directory specification asks. Creates nothing."""
    base = os.environ.get(CACHE_ENV, "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".cache"
    return root.joinpath("edgert", *parts)
