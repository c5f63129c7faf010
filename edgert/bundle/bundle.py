"""A bundle on disk: a directory with ``edgert.json`` and the artifact files it names."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from ..errors import BundleError, IntegrityError, UnknownVariantError, UnsafePathError
from ..fileio import LOCK_NAME, atomic_write_bytes, sha256_file
from ..progress import ByteProgress
from .manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, Manifest, Variant, _show, parse_manifest


def _read_at_most(handle, limit: int, chunk: int = 1 << 20) -> bytes:
    """Read until EOF or ``limit`` bytes; ``read(n)`` alone would allocate n bytes up front."""
    parts, total = [], 0
    while total < limit:
        part = handle.read(min(chunk, limit - total))
        if not part:
            break
        parts.append(part)
        total += len(part)
    return b"".join(parts)


class Bundle:
    """An opened bundle. Opening checks the manifest and paths; ``verify`` checks hashes."""

    def __init__(self, root: Path, manifest: Manifest):
        self.root = root
        self.manifest = manifest
        self._verified: Dict[str, tuple] = {}

    @classmethod
    def open(cls, path: os.PathLike | str) -> "Bundle":
        root = Path(path)
        if not root.exists():
            raise BundleError(f"bundle not found: expected a bundle directory at {root}, found nothing")
        if not root.is_dir():
            raise BundleError(f"expected a bundle directory containing {MANIFEST_NAME}, found a file: {root}")
        manifest_path = root / MANIFEST_NAME
        if not manifest_path.is_file():
            raise BundleError(f"{root} is not a bundle: {MANIFEST_NAME} is missing (expected a file, found none)")
        size = manifest_path.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise BundleError(f"{manifest_path}: expected at most {MAX_MANIFEST_BYTES} bytes, found {size}")
        try:
            with open(manifest_path, "rb") as handle:  # bounded read: the file may grow after the stat
                raw = _read_at_most(handle, MAX_MANIFEST_BYTES + 1)
        except OSError as exc:
            raise BundleError(f"cannot read {manifest_path}: expected a readable file, found {exc.strerror}") from None
        if len(raw) > MAX_MANIFEST_BYTES:
            raise BundleError(
                f"{manifest_path}: expected at most {MAX_MANIFEST_BYTES} bytes, found a larger file"
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BundleError(f"{manifest_path}: expected UTF-8 text, found byte {raw[exc.start]:#04x} "
                              f"at offset {exc.start}") from None
        manifest = parse_manifest(text, str(manifest_path))
        bundle = cls(root.resolve(), manifest)
        for variant in manifest.variants:
            bundle._check_file(variant)
        return bundle

    @property
    def variants(self) -> List[Variant]:
        return list(self.manifest.variants)

    def variant(self, name: Optional[str] = None) -> Variant:
        """The named variant, or the default one (the first) when name is None."""
        if not self.manifest.variants:
            raise BundleError(f"bundle {self.root} has no variants")
        if name is None:
            return self.manifest.variants[0]
        found = self.manifest.variant(name)
        if found is None:
            names = ", ".join(v.name for v in self.manifest.variants)
            raise UnknownVariantError(f"unknown variant {name!r}; this bundle has: {names}")
        return found

    def path_of(self, variant: Variant, file: Optional[str] = None) -> Path:
        """An artifact file's path, refusing any that resolves outside the bundle (e.g. symlinks)."""
        file = file or variant.file
        try:
            candidate = (self.root / file).resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: symlink loop (Python < 3.13)
            raise BundleError(
                f"variant {variant.name!r}: expected file {_show(file)} to resolve inside the bundle, "
                f"found an unresolvable path ({_show(str(exc), 160)})"
            ) from None
        if self.root != candidate and self.root not in candidate.parents:
            raise UnsafePathError(
                f"variant {variant.name!r}: expected file {_show(file)} inside the bundle, "
                f"found it resolves to {_show(str(candidate), 160)}, outside the bundle {self.root}"
            )
        return candidate

    def _stat(self, variant: Variant, file: str) -> os.stat_result:
        """The stat of a regular artifact file inside the bundle; BundleError otherwise."""
        path = self.path_of(variant, file)
        try:
            info = path.stat()
        except FileNotFoundError:
            raise BundleError(
                f"variant {variant.name!r}: artifact {_show(file)} is missing from {self.root} (expected a file, found none)"
            ) from None
        except OSError as exc:
            raise BundleError(
                f"variant {variant.name!r}: cannot read artifact {_show(file)}: expected a readable file, found {exc.strerror}"
            ) from None
        if not stat.S_ISREG(info.st_mode):
            raise BundleError(
                f"variant {variant.name!r}: expected artifact {_show(file)} to be a regular file, "
                "found a directory or special file"
            )
        return info

    def _check_file(self, variant: Variant) -> Path:
        for entry in variant.all_files():
            size = self._stat(variant, entry["file"]).st_size
            if size != entry["size_bytes"]:
                raise IntegrityError(
                    f"variant {variant.name!r}: {_show(entry['file'])} is {size} bytes, "
                    f"manifest says {entry['size_bytes']}: expected the recorded size, found a truncated or replaced file"
                )
        return self.path_of(variant)

    def verify(self, names: Optional[Iterable[str]] = None, progress: Optional[ByteProgress] = None) -> None:
        """Check size and sha256 of the named variants (all by default)."""
        chosen = [self.variant(n) for n in names] if names is not None else self.variants
        for variant in chosen:
            self.artifact(variant, progress=progress)

    def artifact(self, variant: Variant, progress: Optional[ByteProgress] = None) -> Path:
        """The verified path of a variant's artifact; hashes it unless already verified unchanged."""
        path = self._check_file(variant)
        stamps = []
        for entry in variant.all_files():
            info = self._stat(variant, entry["file"])
            stamps.append((info.st_size, info.st_mtime_ns, info.st_ino))
        if self._verified.get(variant.name) == tuple(stamps):
            return path
        for entry in variant.all_files():
            try:
                digest = sha256_file(self.path_of(variant, entry["file"]), progress)
            except OSError as exc:
                raise BundleError(
                    f"variant {variant.name!r}: cannot read artifact {_show(entry['file'])}: "
                    f"expected a readable file, found {exc.strerror}"
                ) from None
            if digest != entry["sha256"]:
                raise IntegrityError(
                    f"variant {variant.name!r}: sha256 of {_show(entry['file'])} is {digest[:16]}..., "
                    f"manifest says {entry['sha256'][:16]}...: expected the recorded bytes, "
                    "found a modified or corrupt file"
                )
        self._verified[variant.name] = tuple(stamps)
        return path

    @classmethod
    def open_for_writing(cls, path: os.PathLike | str) -> Optional["Bundle"]:
        """The bundle at ``path`` to add variants to, or None where a new one may be created
        (missing or empty directory); refuses a file or a directory of something else. A
        writer's lock file (``fileio.LOCK_NAME``) does not count as content."""
        root = Path(path)
        if root.exists() and not root.is_dir():
            raise BundleError(f"expected a bundle directory, found a file: {root}")
        if (root / MANIFEST_NAME).exists():
            return cls.open(root)
        if root.exists() and any(p.name != LOCK_NAME for p in root.iterdir()):
            raise BundleError(f"{root} exists, is not empty and has no {MANIFEST_NAME}; refusing to write into it")
        return None

    def save_manifest(self) -> None:
        atomic_write_bytes(self.root / MANIFEST_NAME, self.manifest.to_json().encode("utf-8"))
