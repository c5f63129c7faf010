"""``edgert convert``: pre-flight, convert, gate every artifact, then add the passing set.

Everything is staged in a hidden directory beside the bundle (same filesystem, so the
final moves are renames). The bundle itself is written by ``edgert.bundle.BundleWriter``,
which holds the bundle's lock twice: briefly at the start (recover a killed writer, refuse a
name clash before the long work) and for the commit (re-read the manifest, check again, move
the artifacts, replace the manifest). A failure, an interruption or a failed gate leaves the
bundle as it was; if any artifact fails its gate, none is added. Third-party output goes to
a log file (or the screen, ``verbose``) through ``edgert.logs.route_third_party``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import psutil

from edgert.version import __version__
from edgert.bundle import Bundle, BundleWriter, Variant
from edgert.bundle.pack import model_label, slug
from edgert.formats.gguf_costs import describe_header
from edgert.errors import BundleError, ConversionError, DiskFullError, EdgertError, QualityGateError, UsageError
from edgert.fileio import crash_point, free_bytes, is_disk_full, sha256_file
from edgert.formats.gguf import read_header
from edgert.logs import route_third_party
from edgert.progress import Progress

from .base import Artifact, Converter, ConvertOptions
from .quality import TorchReference
from .registry import converter_for
from .source import Source, resolve_source

STAGING_PREFIX = ".edgert-staging-"
MEMORY_MARGIN_BYTES = 512 * 1024 * 1024
TARGET_TAGS = {"gguf": "", "onnx": "onnx-", "tensorrt": "trt-"}


@dataclass
class ConvertResult:
    bundle: Bundle
    added: List[Variant]
    gate: Dict[str, Dict]
    log_path: Optional[Path] = None  # where third-party output went (None: verbose, on the screen)


def _label(source_path: Path) -> str:
    """The model part of variant names, known before any heavy work."""
    if source_path.is_file() and source_path.suffix == ".gguf":
        return model_label(source_path, read_header(source_path))
    return slug(source_path.resolve().name)


def _variant_name(label: str, target: str, quantization: str) -> str:
    return slug(f"{label}-{TARGET_TAGS[target]}{quantization}")


def _source_digest(source: Source) -> str:
    if source.path.is_file():
        return sha256_file(source.path)
    digest = hashlib.sha256()
    for path in sorted(source.path.glob("*.safetensors")) + [source.path / "config.json"]:
        digest.update(path.name.encode())
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def preflight(source: Source, converter: Converter, quantizations: Sequence[str], staging: Path,
              thresholds: Optional[Dict[str, float]] = None) -> None:
    """Refuse before the long work: unsupported model, gate limits that do not apply to it,
    too little disk or memory."""
    reason = converter.supports(source)
    if reason:
        raise ConversionError(reason)
    converter.check_thresholds(thresholds or {}, source)
    need = sum(converter.estimated_output_bytes(source, q) for q in quantizations)
    free = shutil.disk_usage(staging).free
    if need > free:
        raise ConversionError(f"not enough disk space: the outputs need about {need / 1e9:.1f} GB, "
                              f"{staging} has {free / 1e9:.1f} GB free")
    available = psutil.virtual_memory().available
    # the fp32 reference model for the gate plus one converted copy being evaluated
    peak = source.parameter_count * (4 + 2) + MEMORY_MARGIN_BYTES
    if peak > available:
        raise ConversionError(f"not enough memory: converting and checking this model needs about "
                              f"{peak / 1e9:.1f} GB, {available / 1e9:.1f} GB is available")


def _variant_for(artifact: Artifact, name: str, bundle_root: Path, source: Source, gate: Dict, digest: str,
                 sha256: Optional[str] = None) -> Variant:
    main_rel = artifact.path.relative_to(bundle_root).as_posix()
    provenance = {"source": str(source.path.resolve()), "source_kind": source.kind, "source_sha256": digest,
                  "converted_by": f"edgert {__version__}",
                  "converted_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                  **{k: v for k, v in artifact.metadata.items() if k != "engine"}}
    if artifact.format == "gguf":
        fields = describe_header(read_header(artifact.path))
        fields["quantization"] = artifact.quantization
    else:
        tok_cfg = source.hf_dir / "tokenizer_config.json"
        template = json.loads(tok_cfg.read_text()).get("chat_template") if tok_cfg.exists() else None
        fields = dict(format=artifact.format, quantization=artifact.quantization,
                      parameter_count=source.parameter_count,
                      context_length=source.config.get("max_position_embeddings"),
                      architecture=source.model_type, chat_template=template if isinstance(template, str) else None,
                      tokenizer={"model": "tokenizers", "vocab_size": source.config.get("vocab_size")})
    files = [{"file": p.relative_to(bundle_root).as_posix(), "sha256": sha256_file(p), "size_bytes": p.stat().st_size}
             for p in artifact.files]
    extra = {"engine": artifact.metadata["engine"]} if "engine" in artifact.metadata else {}
    return Variant(name=name, file=main_rel, sha256=sha256 or sha256_file(artifact.path), size_bytes=artifact.path.stat().st_size,
                   provenance=provenance, quality_gate=gate, files=files, extra=extra, **fields)


def _refuse_clashes(writer: BundleWriter, names: Dict[str, str], out: Path) -> None:
    clash = [n for n in names.values() if n in writer.taken_names()]
    if clash:
        raise BundleError(f"variant(s) {', '.join(clash)} already exist in {out}; remove them or convert into another bundle")


def convert(source_path: Path, target: str, quantizations: Sequence[str], out: Path, *,
            trust_pickle: bool = False, thresholds: Optional[Dict[str, float]] = None,
            imatrix: Optional[str] = None, calibration: Optional[Path] = None, block_size: int = 32, threads: Optional[int] = None,
            progress: Progress = None, verbose: bool = False, log_path: Optional[Path] = None) -> ConvertResult:
    """Convert ``source_path`` to ``target`` once per quantization and add the variants to ``out``.

    Third-party logs, warnings and progress bars go to ``log_path`` (default: a new file in
    ``edgert.logs.log_dir()``), or stay on the screen with ``verbose``."""
    converter = converter_for(target)
    quantizations = converter.check_quantizations(list(quantizations))
    if not quantizations:
        raise UsageError("--quant: expected at least one quantization")
    thresholds = dict(thresholds or {})
    converter.check_thresholds(thresholds)
    out = Path(out)
    source_path = Path(source_path)
    with BundleWriter(out, stage="convert") as writer:  # recovers a killed writer, refuses a non-bundle
        if not source_path.exists():
            raise ConversionError(f"source not found: {source_path}")
        label = _label(source_path)
        # names as recorded: a quantization's label (int4 -> int4-block32) keys artifacts and gates
        labels = [converter.quantization_label(q, block_size) for q in quantizations]
        names = {q: _variant_name(label, target, q) for q in labels}
        _refuse_clashes(writer, names, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(out)
    staging = out.parent / f"{STAGING_PREFIX}{out.name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    crash_point("convert.staged")
    try:
        with route_third_party(verbose, log_path, kind="convert") as route:
            try:
                artifacts, gates, source = _convert_and_gate(source_path, converter, quantizations, staging, thresholds,
                                                             trust_pickle, imatrix, calibration, block_size, threads,
                                                             progress)
            except EdgertError as exc:
                if route.written:
                    exc.args = (f"{exc.args[0] if exc.args else exc} (third-party log: {route.path})", *exc.args[1:])
                raise
        result = _commit(out, artifacts, names, source, gates, label)
        result.log_path = route.path
        return result
    except OSError as exc:
        if is_disk_full(exc):
            free = free_bytes(staging)
            room = f" ({free / 1e6:.0f} MB free)" if free is not None else ""
            raise DiskFullError(f"disk full while converting {source_path} in {staging}{room}; "
                                f"the bundle {out} was left as it was") from exc
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _convert_and_gate(source_path: Path, converter: Converter, quantizations: List[str], staging: Path,
                      thresholds: Dict[str, float], trust_pickle: bool, imatrix: Optional[str],
                      calibration: Optional[Path], block_size: int, threads: Optional[int], progress: Progress):
    """The long work, in the staging directory: resolve, pre-flight, convert, gate."""
    source = resolve_source(source_path, staging, trust_pickle=trust_pickle, progress=progress)
    preflight(source, converter, quantizations, staging, thresholds)
    crash_point("convert.preflight_passed")
    work = staging / "artifacts"
    work.mkdir()
    options = ConvertOptions(quantizations=quantizations, work_dir=work, block_size=block_size,
                             imatrix=Path(imatrix) if imatrix and imatrix != "auto" else imatrix,
                             calibration=Path(calibration) if calibration else None,
                             thresholds=thresholds, threads=threads, progress=progress)
    artifacts = converter.convert(source, options)
    crash_point("convert.converted")
    reference = _reference(source, converter)
    gates: Dict[str, Dict] = {}
    failed = []
    for index, artifact in enumerate(artifacts):
        if progress:
            progress(f"quality gate {artifact.quantization}", index, len(artifacts))
        result = converter.gate(source, artifact, reference, options)
        gates[artifact.quantization] = result.to_dict()
        if not result.passed:
            failed.append(f"{artifact.quantization}: {'; '.join(result.failures)}")
    if failed:
        raise QualityGateError("quality gate failed, nothing was added to the bundle: " + " | ".join(failed))
    crash_point("convert.gated")
    return artifacts, gates, source


def _remove_stale_staging(out: Path) -> None:
    """Staging directories left by killed conversions (their process no longer exists)."""
    for path in out.parent.glob(f"{STAGING_PREFIX}{out.name}-*"):
        pid = path.name.rsplit("-", 1)[-1]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            pass


def _reference(source: Source, converter: Converter):
    make = getattr(converter, "reference", None)
    if make is not None:
        return make(source)
    return TorchReference(source.hf_dir)


def _commit(out: Path, artifacts: List[Artifact], names: Dict[str, str], source: Source, gates: Dict[str, Dict],
            label: str) -> ConvertResult:
    """Hand the gated artifacts to the bundle writer: a directory per multi-file artifact,
    else one file; the manifest is re-read under the lock, so concurrent additions are kept."""
    digest = _source_digest(source)
    with BundleWriter(out, stage="convert") as writer:
        _refuse_clashes(writer, names, out)
        root = writer.root
        for artifact in artifacts:
            name = names[artifact.quantization]
            writer.reserve(name, name if artifact.files else f"{name}{artifact.path.suffix}")
        variants: List[Variant] = []
        for artifact in artifacts:
            name = names[artifact.quantization]
            sha256 = None
            if artifact.files:  # multi-file artifacts get a directory of their own
                target_dir = writer.add_dir(artifact.path.parent, name, mode="move")
                artifact = Artifact(artifact.format, artifact.quantization, target_dir / artifact.path.name,
                                    [target_dir / p.relative_to(artifact.path.parent) for p in artifact.files],
                                    artifact.metadata)
            else:
                target = root / f"{name}{artifact.path.suffix}"
                sha256 = writer.add_file(artifact.path, name, mode="move")
                artifact = Artifact(artifact.format, artifact.quantization, target, [], artifact.metadata)
            variants.append(_variant_for(artifact, name, root, source, gates[artifact.quantization], digest, sha256))
        writer.commit(variants, label)
    return ConvertResult(Bundle.open(root), variants, gates)
