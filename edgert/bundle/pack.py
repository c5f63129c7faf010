"""Build or extend a bundle from existing model files (``edgert pack``)."""

from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from .. import __version__
from ..errors import BundleError, UsageError
from ..fileio import atomic_copy, check_free_space, crash_point, pending_files, recover_pending, remove_stale_temps
from ..formats.gguf import GGUFHeader, read_header
from .bundle import Bundle
from .manifest import FORMATS, MANIFEST_NAME, Manifest, Variant, parse_manifest

#: progress(step_label, done_bytes, total_bytes)
PackProgress = Callable[[str, int, int], None]


def slug(text: str) -> str:
    """Lowercase, dash-separated, safe as a variant name or file name."""
    return re.sub(r"[^a-z0-9._]+", "-", text.lower()).strip("-.")[:48] or "model"


def describe_gguf(path: Path, header: GGUFHeader) -> dict:
    """The manifest fields a GGUF file contributes about itself."""
    return dict(
        format="gguf",
        quantization=header.quantization,
        parameter_count=header.parameter_count,
        context_length=header.context_length,
        architecture=header.architecture,
        chat_template=header.chat_template,
        tokenizer=header.tokenizer_info(),
    )


def model_label(path: Path, header: GGUFHeader) -> str:
    """A short model label: basename + size label from GGUF metadata, else the file stem."""
    base = header.get("general.basename")
    size = header.get("general.size_label")
    finetune = str(header.get("general.finetune") or "")
    if base and size:
        label = f"{base}-{size}"
        if "instruct" in (finetune + path.name).lower():
            label += "-instruct"
        return slug(label)
    stem = path.name[: -len(".gguf")] if path.name.endswith(".gguf") else path.stem
    quant = header.quantization.lower()
    stem = re.sub(rf"[.-]{re.escape(quant)}$", "", stem, flags=re.IGNORECASE)
    return slug(stem)


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
    """Undo what a killed ``pack`` or ``convert`` left in the bundle directory ``out``: temp files,
    and the artifacts of a commit whose manifest was never written. Returns what was removed."""
    out = Path(out)
    if not out.is_dir():
        return []
    removed = remove_stale_temps(out)
    referenced = referenced_names(out)
    if referenced is not None:
        removed += recover_pending(out, keep=lambda name: name in referenced)
    return removed


def pack(
    model_files: Sequence[Path],
    out: Path,
    model_name: Optional[str] = None,
    names: Optional[Sequence[str]] = None,
    source: Optional[str] = None,
    progress: Optional[PackProgress] = None,
) -> Bundle:
    """Add one variant per model file to the bundle at ``out`` (created if missing).

    Every file is validated before anything is written; artifacts are copied atomically
    and the manifest is replaced last, so a failure leaves an existing bundle as it was.
    """
    if not model_files:
        raise UsageError("expected at least one model file to pack")
    if names is not None and len(names) != len(model_files):
        raise UsageError(f"expected one --name per model file: {len(model_files)} files, {len(names)} names")
    out = Path(out)
    recover_interrupted(out)
    existing = Bundle.open_for_writing(out)

    planned: List[tuple] = []
    taken = {v.name for v in existing.variants} if existing else set()
    taken_files = {v.file for v in existing.variants} if existing else set()
    for index, raw in enumerate(model_files):
        path = Path(raw)
        if not path.is_file():
            raise BundleError(f"model file not found: {path}")
        if path.suffix.lower() != FORMATS["gguf"]:
            raise UsageError(f"{path}: expected a .gguf model file, found {path.suffix or 'no suffix'}")
        header = read_header(path)
        fields = describe_gguf(path, header)
        label = model_label(path, header)
        name = names[index] if names else f"{label}-{fields['quantization'].lower()}"
        name = slug(name)
        if name in taken:
            raise BundleError(f"variant {name!r} already exists in the bundle; pass --name to choose another")
        file = f"{name}.gguf"
        if file in taken_files:
            raise BundleError(f"file {file!r} already exists in the bundle")
        taken.add(name)
        taken_files.add(file)
        planned.append((path, name, file, fields, label))

    check_free_space(out, sum(p[0].stat().st_size for p in planned), f"packing {len(planned)} file(s) into {out}")
    crash_point("pack.validated")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    variants: List[Variant] = []
    try:
        with pending_files(out, [p[2] for p in planned]):
            crash_point("pack.journaled")
            for path, name, file, fields, label in planned:
                total = path.stat().st_size
                report = (lambda d, t, n=name: progress(f"copy {n}", d, t)) if progress else None
                digest = atomic_copy(path, out / file, report)
                crash_point("pack.copied")
                variants.append(
                    Variant(
                        name=name,
                        file=file,
                        sha256=digest,
                        size_bytes=total,
                        provenance={
                            "source": source or str(path.resolve()),
                            "source_file": path.name,
                            "source_sha256": digest,
                            "packed_by": f"edgert {__version__}",
                            "packed_at": now,
                        },
                        **fields,
                    )
                )
            bundle = _save(out, existing, variants, model_name or planned[0][4])
            crash_point("pack.committed")
    except BaseException:
        if not _manifest_names(out, variants):
            for variant in variants:
                (out / variant.file).unlink(missing_ok=True)
        if created and out.exists() and not any(out.iterdir()):
            out.rmdir()
        raise
    return bundle


def _manifest_names(out: Path, variants: List[Variant]) -> bool:
    """Whether the manifest on disk already names these variants (the commit happened)."""
    referenced = referenced_names(out) or set()
    return bool(variants) and all(v.file in referenced for v in variants)


def _save(out: Path, existing: Optional[Bundle], variants: List[Variant], model_name: str) -> Bundle:
    if existing is not None:
        manifest = existing.manifest
        manifest.variants.extend(variants)
    else:
        manifest = Manifest(model_name=model_name, variants=variants, created_by=f"edgert {__version__}")
    bundle = Bundle(out.resolve(), manifest)
    crash_point("pack.before_manifest")
    bundle.save_manifest()
    return bundle
