"""Atomic file writes, hashing, and recovery after a killed writer.

A write goes to a temporary file in the destination's directory, is fsynced, then
renamed over the final path, so a crash never leaves a partial file at a final path.
Temp files carry the writer's pid so the next writer can remove those of dead processes.
A multi-file commit (several artifacts, then the manifest) records the final paths it is
about to create in a pending journal first, so the files of a commit that never reached
its manifest can be found and removed later (``recover_pending``).

A failed write that ran out of space raises ``DiskFullError`` saying what was written and
how much space it needed and found; its temp file is removed.

``crash_point`` is a test hook: with ``EDGERT_CRASH_POINT=name:N`` the process kills itself
(SIGKILL) at the Nth time it passes the named point; ``EDGERT_CRASH_TRACE=file`` appends
every point passed to ``file``. Unset, it costs two environment look-ups.

``exclusive_lock`` is the one-writer-at-a-time lock of a directory (``fcntl.flock`` on a lock
file inside it, removed again by its holder).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Callable, Dict, Iterator, List, Optional, Sequence

from .errors import DiskFullError
from .progress import ByteProgress

CHUNK_BYTES = 4 * 1024 * 1024
TEMP_PREFIX = ".edgert-tmp-"
PENDING_PREFIX = ".edgert-pending-"
CRASH_POINT_ENV = "EDGERT_CRASH_POINT"
CRASH_TRACE_ENV = "EDGERT_CRASH_TRACE"
LOCK_NAME = ".edgert-lock"
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
LOCK_POLL_S = 0.05

_crash_hits: Dict[str, int] = {}


def crash_point(name: str) -> None:
    """Test hook: SIGKILL this process at the Nth pass of ``name`` when EDGERT_CRASH_POINT=name:N."""
    target = os.environ.get(CRASH_POINT_ENV)
    trace = os.environ.get(CRASH_TRACE_ENV)
    if not target and not trace:
        return
    hits = _crash_hits[name] = _crash_hits.get(name, 0) + 1
    point = f"{name}:{hits}"
    if trace:
        fd = os.open(trace, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, f"{point}\n".encode())
        finally:
            os.close(fd)
    if target == point:
        os.kill(os.getpid(), signal.SIGKILL)


# ------------------------------------------------------------------ full disk
def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


def _mb(n_bytes: int) -> str:
    """A size for a message: kB below 0.1 MB, GB from 10 GB, MB in between."""
    if n_bytes < 100_000:
        return f"{n_bytes / 1e3:.1f} kB"
    if n_bytes >= 10 * 10**9:
        return f"{n_bytes / 1e9:.1f} GB"
    return f"{n_bytes / 1e6:.1f} MB"


def free_bytes(path: Path) -> Optional[int]:
    """Free space on the filesystem holding ``path`` (its nearest existing parent), if readable."""
    path = Path(path)
    for candidate in (path, *path.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def disk_full_error(path: Path, needed_bytes: Optional[int] = None, what: str = "writing") -> DiskFullError:
    """The one-line error for a write to ``path`` that ran out of space."""
    free = free_bytes(Path(path).parent)
    facts = []
    if needed_bytes is not None:
        facts.append(f"needs {_mb(needed_bytes)}")
    if free is not None:
        facts.append(f"{_mb(free)} free")
    detail = f" ({', '.join(facts)})" if facts else ""
    return DiskFullError(f"disk full while {what} {path}{detail}; nothing was written there")


def check_free_space(directory: Path, needed_bytes: int, what: str) -> None:
    """Refuse before ``what`` writes ``needed_bytes`` into ``directory`` if the filesystem has less free."""
    free = free_bytes(directory)
    if free is not None and needed_bytes > free:
        raise DiskFullError(f"not enough disk space for {what}: needs {_mb(needed_bytes)}, {_mb(free)} free in {directory}")


# -------------------------------------------------------------- atomic writes
def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _final_mode(path: Path) -> int:
    """Keep a replaced file's permissions; new files get rw-r--r-- (mkstemp's own is rw-------)."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o644


def _open_temp(fd: int) -> BinaryIO:
    """The file object every atomic write goes through (tests replace it to fill the disk)."""
    return os.fdopen(fd, "wb")


@contextlib.contextmanager
def atomic_writer(path: Path, size_hint: Optional[int] = None) -> Iterator[BinaryIO]:
    """Open a temp file beside ``path``; on clean exit fsync and rename it into place.

    ``size_hint`` (bytes about to be written) only improves the message of a full disk.
    """
    path = Path(path)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", dir=path.parent)
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full_error(path, size_hint) from exc
        raise
    tmp = Path(tmp_name)
    crash_point("atomic.tmp_created")
    try:
        with _open_temp(fd) as handle:
            os.fchmod(fd, _final_mode(path))
            yield handle
            crash_point("atomic.written")
            handle.flush()
            os.fsync(handle.fileno())
        crash_point("atomic.fsynced")
        os.replace(tmp, path)
        crash_point("atomic.renamed")
        _fsync_dir(path.parent)
        crash_point("atomic.dir_synced")
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise disk_full_error(path, size_hint) from exc
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_writer(path, size_hint=len(data)) as handle:
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
    check_free_space(Path(dst).parent, total, f"copying {Path(src).name} to {dst}")
    digest = hashlib.sha256()
    done = 0
    with open(src, "rb") as source, atomic_writer(dst, size_hint=total) as target:
        while chunk := source.read(CHUNK_BYTES):
            digest.update(chunk)
            target.write(chunk)
            done += len(chunk)
            crash_point("copy.chunk")
            if progress:
                progress(done, total)
    return digest.hexdigest()


# ------------------------------------------------------- recovery after a kill
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_pid(name: str, prefix: str) -> Optional[int]:
    """The writer's pid encoded in a temp or journal name, None for names edgert did not make."""
    rest = name[len(prefix):]
    head = rest.split("-", 1)[0].split(".", 1)[0]
    return int(head) if head.isdigit() else None


def remove_stale_temps(directory: Path) -> List[Path]:
    """Delete temp files in ``directory`` whose writing process no longer exists."""
    removed = []
    for path in Path(directory).glob(f"{TEMP_PREFIX}*"):
        pid = _owner_pid(path.name, TEMP_PREFIX)
        if pid is not None and pid != os.getpid() and not _pid_alive(pid) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


@contextlib.contextmanager
def pending_files(directory: Path, names: Sequence[str]) -> Iterator[Path]:
    """Journal the entries (relative names) a commit is about to create in ``directory``.

    The journal exists for the duration of the with-block; a process killed inside it leaves
    the journal behind, and ``recover_pending`` then removes the entries nobody kept.
    """
    directory = Path(directory)
    journal = directory / f"{PENDING_PREFIX}{os.getpid()}.json"
    atomic_write_bytes(journal, json.dumps(sorted(names)).encode())
    try:
        yield journal
    finally:
        journal.unlink(missing_ok=True)


def recover_pending(directory: Path, keep: Callable[[str], bool]) -> List[Path]:
    """Remove the entries of dead writers' journals for which ``keep(name)`` is false."""
    directory = Path(directory)
    removed = []
    for journal in sorted(directory.glob(f"{PENDING_PREFIX}*.json")):
        pid = _owner_pid(journal.name, PENDING_PREFIX)
        if pid is None or pid == os.getpid() or _pid_alive(pid):
            continue
        try:
            names = json.loads(journal.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            names = None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            continue  # not one of ours after all: leave it for a human
        for name in names:
            target = directory / name
            if Path(name).is_absolute() or ".." in Path(name).parts or keep(name):
                continue
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target, ignore_errors=True)
                removed.append(target)
            elif target.exists() or target.is_symlink():
                target.unlink(missing_ok=True)
                removed.append(target)
        journal.unlink(missing_ok=True)
    return removed


# ------------------------------------------------------------------- one writer
class LockTimeout(Exception):
    """``exclusive_lock`` waited ``timeout_s`` for another holder (callers say who and what)."""


@contextlib.contextmanager
def exclusive_lock(directory: Path, timeout_s: float) -> Iterator[Path]:
    """Hold ``fcntl.flock`` on ``directory/LOCK_NAME`` (created as needed) for the with-block.

    A second holder, in this or another process, waits up to ``timeout_s`` and then raises
    ``LockTimeout``. The holder removes the file before it lets go; a waiter that then wins
    the lock on the removed file notices (the name no longer leads to its inode) and retries
    on the new one. A killed holder's file stays behind unlocked: ``remove_stale_lock``.
    """
    path = Path(directory) / LOCK_NAME
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # the last holder removed the (empty) directory as it left
            path.parent.mkdir(parents=True, exist_ok=True)
            continue
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise LockTimeout(path) from None
                    time.sleep(LOCK_POLL_S)
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
            if current is not None and current.st_ino == os.fstat(fd).st_ino:
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # won a lock file its holder had removed: take the new one
    try:
        yield path
    finally:
        try:
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)  # closing releases the lock


def remove_stale_lock(directory: Path) -> bool:
    """Remove ``directory/LOCK_NAME`` left by a killed holder (nobody holds its lock)."""
    path = Path(directory) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    try:
        current = os.stat(path)
        if current.st_ino != os.fstat(fd).st_ino:
            return False
        path.unlink()
        return True
    except FileNotFoundError:
        return False
    finally:
        os.close(fd)
