"""Build or extend a bundle from existing model files (``edgert pack``).

``pack`` describes one GGUF variant per file and hands the files to ``writer.BundleWriter``,
which holds the bundle's lock and makes the addition one transaction."""

from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path
from typing import List, Optional, Sequence

from ..version import __version__
from ..errors import BundleError, UsageError
from ..fileio import check_free_space, crash_point
from ..formats.gguf import GGUFHeader, read_header
from ..formats.gguf_costs import describe_header
from ..progress import Progress
from .bundle import Bundle
from .manifest import FORMATS, Variant
from .writer import BundleWriter


def slug(text: str) -> str:
    """Lowercase, dash-separated, safe as a variant name or file name."""
    return re.sub(r"[^a-z0-9._]+", "-", text.lower()).strip("-.")[:48] or "model"


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


def pack(
    model_files: Sequence[Path],
    out: Path,
    model_name: Optional[str] = None,
    names: Optional[Sequence[str]] = None,
    source: Optional[str] = None,
    progress: Progress = None,
) -> Bundle:
    """Add one variant per model file to the bundle at ``out`` (created if missing).

    Every file is validated before anything is written; artifacts are copied atomically
    and the manifest is replaced last, so a failure leaves an existing bundle as it was.
    ``progress(label, done_bytes, total_bytes)`` reports each copy.
    """
    if not model_files:
        raise UsageError("expected at least one model file to pack")
    if names is not None and len(names) != len(model_files):
        raise UsageError(f"expected one --name per model file: {len(model_files)} files, {len(names)} names")
    planned = []
    for raw in model_files:
        path = Path(raw)
        if not path.is_file():
            raise BundleError(f"model file not found: {path}")
        if path.suffix.lower() != FORMATS["gguf"]:
            raise UsageError(f"{path}: expected a .gguf model file, found {path.suffix or 'no suffix'}")
        header = read_header(path)
        planned.append((path, describe_header(header), model_label(path, header)))

    out = Path(out)
    with BundleWriter(out, stage="pack") as writer:
        chosen = []
        for index, (path, fields, label) in enumerate(planned):
            name = slug(names[index] if names else f"{label}-{fields['quantization'].lower()}")
            if name in writer.taken_names():
                raise BundleError(f"variant {name!r} already exists in the bundle; pass --name to choose another")
            writer.reserve(name, f"{name}.gguf")
            chosen.append(name)
        check_free_space(out, sum(p[0].stat().st_size for p in planned), f"packing {len(planned)} file(s) into {out}")
        crash_point("pack.validated")
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        variants: List[Variant] = []
        for (path, fields, label), name in zip(planned, chosen):
            report = (lambda d, t, n=name: progress(f"copy {n}", d, t)) if progress else None
            digest = writer.add_file(path, name, mode="copy", progress=report)
            variants.append(Variant(
                name=name,
                file=f"{name}.gguf",
                sha256=digest,
                size_bytes=path.stat().st_size,
                provenance={
                    "source": source or str(path.resolve()),
                    "source_file": path.name,
                    "source_sha256": digest,
                    "packed_by": f"edgert {__version__}",
                    "packed_at": now,
                },
                **fields,
            ))
        return writer.commit(variants, model_name or planned[0][2])
