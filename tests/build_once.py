"""Build a test input directory once per session, shared by conftest files in any folder."""

import shutil
from pathlib import Path


def build_once(base: Path, name: str, build) -> Path:
    """``build(out)`` once under ``base``; a ``.done`` marker makes later calls reuse it."""
    out = base / name
    if not (out / ".done").exists():
        shutil.rmtree(out, ignore_errors=True)
        build(out)
        (out / ".done").write_text("")
    return out
