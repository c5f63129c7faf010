"""The one transactional bundle writer: ``pack``, ``convert`` and ``calibrate`` write through it.

``BundleWriter(out)`` is a context manager. On entry it takes the bundle's lock (a second
writer, in any process, waits up to ``timeout_s`` and is then refused with one line; nothing
is lost), undoes what a killed writer left (``recover_interrupted``) and reads the manifest as
it is now (``.existing``). Then a commit:

1. ``reserve(name, file)`` every variant name and bundle entry about to be created (a clash
   with the manifest or another reservation is refused before anything is written);
2. ``add_file(src, name, mode)`` / ``add_dir(src, name, mode)`` put the artifacts at their
   final paths, the first one after journaling every reserved entry (``fileio.pending_files``);
3. ``commit(variants, model_name)`` extends the manifest and replaces it last.

An exception inside the with-block rolls back: the entries added but not named by the
manifest on disk are removed, and a bundle directory the writer created is removed again.
A SIGKILL leaves only what ``recover_interrupted`` removes next time. The crash points
(``fileio.crash_point``) are ``<stage>.journaled``, ``.copied`` / ``.moved``,
``.before_manifest`` and ``.committed``, ``stage`` being the command (pack, convert).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from ..version import __version__
from ..errors import BundleError
from ..fileio import (LOCK_NAME, LockTimeout, atomic_copy, crash_point, exclusive_lock, pending_files, recover_pending,
                      remove_stale_lock, remove_stale_temps, sha256_file)
from ..progress import ByteProgress
from .bundle import Bundle
from .manifest import MANIFEST_NAME, Manifest, Variant, parse_manifest

#: how long a second writer waits for the bundle's lock before it is refused
LOCK_TIMEOUT_S = 60.0
MODES = ("copy", "move")


def referenced_names(root: Path) -> Optional[set]:
    """Every file the manifest at ``root`` names, with its parent directories; None if unreadable."""
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.exists():
        return set()
    try:
        manifest = parse_manifest(manifest_path.read_text(encoding="utf-8"), str(manifest_path))
    except (BundleError, OSError, UnicodeDecodeError):
        return None
    names = set()
    for variant in manifest.variants:
        for entry in variant.all_files():
            parts = Path(entry["file"]).parts
            names.update(Path(*parts[: i + 1]).as_posix() for i in range(len(parts)))
    return names


def recover_interrupted(out: Path) -> List[Path]:
    """Undo what a killed writer left in the bundle directory ``out``: temp files, the artifacts
    of a commit whose manifest was never written, and its lock file. Returns what was removed."""
    out = Path(out)
    if not out.is_dir():
        return []
    removed = remove_stale_temps(out)
    referenced = referenced_names(out)
    if referenced is not None:
        removed += recover_pending(out, keep=lambda name: name in referenced)
    return removed + ([out / LOCK_NAME] if remove_stale_lock(out) else [])


class BundleWriter:
    """Adds variants to the bundle at ``out`` (created if missing) as one transaction, holding
    the bundle's lock from entry to exit."""

    def __init__(self, out: os.PathLike | str, *, stage: str = "pack", timeout_s: Optional[float] = None):
        self.out = Path(out)
        self.stage = stage
        self.timeout_s = LOCK_TIMEOUT_S if timeout_s is None else timeout_s
        self.existing: Optional[Bundle] = None
        self._created = False
        self._reserved: Dict[str, str] = {}  # variant name -> top-level bundle entry
        self._added: List[Path] = []
        self._journal: Optional[contextlib.ExitStack] = None
        self._committed = False
        self._stack = contextlib.ExitStack()

    @property
    def root(self) -> Path:
        return self.out.resolve()

    # ------------------------------------------------------------ the lock
    def __enter__(self) -> "BundleWriter":
        if self.out.exists() and not self.out.is_dir():
            raise BundleError(f"expected a bundle directory, found a file: {self.out}")
        self._created = not self.out.exists()
        self.out.mkdir(parents=True, exist_ok=True)
        try:
            try:
                self._stack.enter_context(exclusive_lock(self.out, self.timeout_s))
            except LockTimeout:
                raise BundleError(
                    f"bundle {self.out} is locked: another edgert process is writing to it (waited "
                    f"{self.timeout_s:g} s for it to finish); nothing was changed, run this again when it is done"
                ) from None
            recover_interrupted(self.out)
            self.existing = Bundle.open_for_writing(self.out)
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is not None and not self._committed:
                self._rollback()
        finally:
            self._release()

    def _release(self) -> None:
        try:
            if self._journal is not None:
                self._journal.close()
        finally:
            self._stack.close()
            if self._created and self.out.is_dir() and not any(self.out.iterdir()):
                with contextlib.suppress(OSError):  # another writer may have just created its lock file
                    self.out.rmdir()

    def _rollback(self) -> None:
        kept = referenced_names(self.root) or set()
        for path in self._added:
            if path.relative_to(self.root).as_posix() in kept:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    # ------------------------------------------------------------ the commit
    def taken_names(self) -> set:
        """Variant names already in the bundle or reserved by this writer."""
        return ({v.name for v in self.existing.variants} if self.existing else set()) | set(self._reserved)

    def reserve(self, name: str, file: str) -> None:
        """Claim a variant name and the top-level bundle entry (file or directory) it will use."""
        if name in self.taken_names():
            raise BundleError(f"variant {name!r} already exists in the bundle {self.out}; choose another name")
        top = Path(file).parts[0]
        taken = {Path(e["file"]).parts[0] for v in (self.existing.variants if self.existing else []) for e in v.all_files()}
        if top in taken or top in self._reserved.values() or top == MANIFEST_NAME:
            raise BundleError(f"file {top!r} already exists in the bundle {self.out}")
        self._reserved[name] = top

    def _target(self, name: str) -> Path:
        if name not in self._reserved:
            raise KeyError(f"variant {name!r} was not reserved before it was added")
        if self._journal is None:
            self._journal = contextlib.ExitStack()
            self._journal.enter_context(pending_files(self.root, list(self._reserved.values())))
            crash_point(f"{self.stage}.journaled")
        return self.root / self._reserved[name]

    def add_file(self, src: Path, name: str, mode: str = "copy", progress: Optional[ByteProgress] = None) -> str:
        """Put ``src`` at the entry reserved for ``name``; returns the sha256 of the bytes there.
        ``copy`` writes atomically (the source stays); ``move`` renames (same filesystem)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, found {mode!r}")
        target = self._target(name)
        if mode == "copy":
            digest = atomic_copy(Path(src), target, progress)
            self._added.append(target)
            crash_point(f"{self.stage}.copied")
            return digest
        os.replace(src, target)
        self._added.append(target)
        crash_point(f"{self.stage}.moved")
        return sha256_file(target)

    def add_dir(self, src: Path, name: str, mode: str = "move") -> Path:
        """Put the directory ``src`` at the entry reserved for ``name``; returns its final path."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, found {mode!r}")
        target = self._target(name)
        shutil.rmtree(target, ignore_errors=True)  # reserved, so named by no manifest
        self._added.append(target)  # before the copy: a copy that fails half-way is rolled back too
        if mode == "move":
            os.replace(src, target)
        else:
            shutil.copytree(src, target)
        crash_point(f"{self.stage}.moved")
        return target

    def commit(self, variants: Sequence[Variant], model_name: str) -> Bundle:
        """Extend the manifest with ``variants`` (a new bundle is named ``model_name``) and
        replace it; the variants must have been reserved."""
        unknown = [v.name for v in variants if v.name not in self._reserved]
        if unknown:
            raise KeyError(f"variants {unknown} were not reserved before commit")
        if self.existing is not None:
            manifest = self.existing.manifest
            manifest.variants.extend(variants)
        else:
            manifest = Manifest(model_name=model_name, variants=list(variants), created_by=f"edgert {__version__}")
        bundle = Bundle(self.root, manifest)
        crash_point(f"{self.stage}.before_manifest")
        bundle.save_manifest()
        self._committed = True
        crash_point(f"{self.stage}.committed")
        return bundle


def update_manifest(out: os.PathLike | str, change: Callable[[Manifest], None], *,
                    timeout_s: Optional[float] = None) -> Bundle:
    """Re-read the manifest under the bundle's lock, apply ``change`` to it and save it, so a
    concurrent writer's variants or tables are kept (no lost update)."""
    with BundleWriter(out, stage="update", timeout_s=timeout_s) as writer:
        if writer.existing is None:
            raise BundleError(f"{out} is not a bundle: {MANIFEST_NAME} is missing (expected a file, found none)")
        change(writer.existing.manifest)
        return writer.commit([], writer.existing.manifest.model_name)
