"""Atomic file writes and hashing.

A write goes to a temporary file in the destination's directory, is fsynced, then
renamed over the final path, so a crash never leaves a partial file at a final path.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Optional

CHUNK_BYTES = 4 * 1024 * 1024
TEMP_PREFIX = ".edgert-tmp-"

#: progress(done_bytes, total_bytes)
ByteProgress = Callable[[int, int], None]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: Path) -> Iterator[BinaryIO]:
    """Open a temp file beside ``path``; on clean exit fsync and rename it into place."""
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_writer(path) as handle:
        handle.write(data)


def sha256_file(path: Path, progress: Optional[ByteProgress] = None) -> str:
    total = os.path.getsize(path)
    digest = hashlib.sha256()
    done = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
    return digest.hexdigest()


def atomic_copy(src: Path, dst: Path, progress: Optional[ByteProgress] = None) -> str:
    """Copy ``src`` to ``dst`` atomically and return the sha256 of the bytes written."""
    total = os.path.getsize(src)
    digest = hashlib.sha256()
    done = 0
    with open(src, "rb") as source, atomic_writer(dst) as target:
        while chunk := source.read(CHUNK_BYTES):
            digest.update(chunk)
            target.write(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
    return digest.hexdigest()
