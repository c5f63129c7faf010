"""The bundle manifest (``edgert.json``): schema, parsing and validation.

The manifest is plain JSON so that other tools can read it. Parsing is strict about
what edgert relies on (names, files, hashes, sizes, schema version) and keeps unknown
keys, so a newer minor writer does not lose data when an older reader rewrites it.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath
from typing import Any, Dict, List, Optional

from ..errors import BundleError, SchemaVersionError, UnsafePathError
from .. import formats
from ..formats.strict_json import loads_strict

MANIFEST_NAME = "edgert.json"
SCHEMA_VERSION = 1
READABLE_SCHEMA_VERSIONS = (1,)

#: artifact formats and the file suffix each one uses (the format registry's table)
FORMATS: Dict[str, str] = formats.suffixes()

VARIANT_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
MAX_SIZE_BYTES = 2**50  # 1 PiB: larger sizes are corruption, not models

# optional variant fields and the JSON types they must have when present (None is allowed)
OPTIONAL_FIELD_TYPES: Dict[str, tuple] = {
    "quantization": (str,),
    "architecture": (str,),
    "chat_template": (str,),
    "quality_gate": (dict,),
}


@dataclass
class Variant:
    """One deployable artifact of the model (a format x quantization)."""

    name: str
    format: str
    quantization: str
    file: str
    sha256: str
    size_bytes: int
    parameter_count: Optional[int] = None
    context_length: Optional[int] = None
    architecture: Optional[str] = None
    chat_template: Optional[str] = None
    tokenizer: Dict[str, Any] = field(default_factory=dict)
    provenance: Dict[str, Any] = field(default_factory=dict)
    quality_gate: Optional[Dict[str, Any]] = None
    # further files the artifact needs (ONNX external data, tokenizer): {file, sha256, size_bytes}
    files: List[Dict[str, Any]] = field(default_factory=list)
    extra: Dict[str, Any] = field(default_factory=dict)

    def all_files(self) -> List[Dict[str, Any]]:
        """The main file and the further files, each as {file, sha256, size_bytes}."""
        return [{"file": self.file, "sha256": self.sha256, "size_bytes": self.size_bytes}] + list(self.files)

    def to_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        extra = data.pop("extra")
        data.update(extra)
        return data


@dataclass
class Manifest:
    model_name: str
    variants: List[Variant] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION
    created_by: str = ""
    accuracy_table: List[Dict[str, Any]] = field(default_factory=list)
    #: per-prompt policies fitted on calibration records (edgert.policies), per task set
    policy_table: List[Dict[str, Any]] = field(default_factory=list)
    extra: Dict[str, Any] = field(default_factory=dict)

    def variant(self, name: str) -> Optional[Variant]:
        return next((v for v in self.variants if v.name == name), None)

    def to_dict(self) -> Dict[str, Any]:
        data: Dict[str, Any] = {
            "schema_version": self.schema_version,
            "model_name": self.model_name,
            "created_by": self.created_by,
            "variants": [v.to_dict() for v in self.variants],
            "accuracy_table": self.accuracy_table,
        }
        if self.policy_table:
            data["policy_table"] = self.policy_table
        data.update(self.extra)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"


def _show(value: Any, limit: int = 80) -> str:
    """A value for an error message: repr (so one line), cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_relative_path(file: str, where: str) -> str:
    """Refuse paths that are absolute, contain '..', or are not plain relative POSIX paths."""
    if not isinstance(file, str) or not file:
        raise BundleError(f"{where}: expected a relative file path, found {_show(file)}")
    if "\\" in file or "\x00" in file:
        raise UnsafePathError(
            f"{where}: expected a POSIX path, found {_show(file)} with a backslash or NUL byte"
        )
    path = PurePosixPath(file)
    if path.is_absolute() or ".." in path.parts or file.startswith("~"):
        raise UnsafePathError(
            f"{where}: file path {_show(file)} leaves the bundle directory "
            f"(expected a relative path inside the bundle, found {_show(file)})"
        )
    return file


def _require(data: Dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in data:
        raise BundleError(f"{where}: missing required field {key!r} (expected a {kind.__name__}, found none)")
    value = data[key]
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise BundleError(
            f"{where}: expected field {key!r} to be {kind.__name__}, found {type(value).__name__}"
        )
    return value


def _check_size(size: int, where: str) -> int:
    if not 0 <= size <= MAX_SIZE_BYTES:
        raise BundleError(f"{where}: expected size_bytes within 0..{MAX_SIZE_BYTES}, found {size}")
    return size


def _load_json(text: str, source: str) -> Any:
    """Strict JSON: no duplicate keys (parsers disagree on which one wins), no NaN/Infinity."""
    return loads_strict(text, lambda message: BundleError(f"{source}: {message}"))


def _parse_variant(data: Any, index: int) -> Variant:
    where = f"variants[{index}]"
    if not isinstance(data, dict):
        raise BundleError(f"{where}: expected an object, found {type(data).__name__}")
    name = _require(data, "name", str, where)
    if not VARIANT_NAME.match(name):
        raise BundleError(
            f"{where}: expected a name of lowercase letters, digits, '.', '_' or '-' (max 64), found {_show(name)}"
        )
    where = f"variant {name!r}"
    fmt = _require(data, "format", str, where)
    if fmt not in FORMATS:
        raise BundleError(f"{where}: expected a format among {sorted(FORMATS)}, found {_show(fmt)}")
    file = check_relative_path(_require(data, "file", str, where), where)
    sha = _require(data, "sha256", str, where)
    if not SHA256.match(sha):
        raise BundleError(f"{where}: expected sha256 as 64 lowercase hex digits, found {_show(sha)}")
    size = _check_size(_require(data, "size_bytes", int, where), where)
    known = {f for f in Variant.__dataclass_fields__ if f != "extra"}
    fields = {k: v for k, v in data.items() if k in known}
    for key, kind in (("parameter_count", int), ("context_length", int)):
        value = fields.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kind) or value < 0):
            raise BundleError(f"{where}: expected {key} to be a non-negative integer, found {_show(value)}")
    for key, kinds in OPTIONAL_FIELD_TYPES.items():
        value = fields.get(key)
        if value is not None and not isinstance(value, kinds):
            raise BundleError(
                f"{where}: expected {key} to be {kinds[0].__name__} or null, found {type(value).__name__}"
            )
    for key in ("tokenizer", "provenance"):
        if not isinstance(fields.get(key, {}), dict):
            raise BundleError(f"{where}: expected {key} to be an object, found {type(fields[key]).__name__}")
    if fmt == "tensorrt" and not isinstance(data.get("engine", {}), dict):
        raise BundleError(f"{where}: expected engine (the compatibility key) to be an object, "
                          f"found {type(data['engine']).__name__}")
    extra_files = fields.get("files", [])
    if not isinstance(extra_files, list):
        raise BundleError(f"{where}: expected files to be a list, found {type(extra_files).__name__}")
    for i, entry in enumerate(extra_files):
        at = f"{where} files[{i}]"
        if not isinstance(entry, dict):
            raise BundleError(f"{at}: expected an object, found {type(entry).__name__}")
        check_relative_path(_require(entry, "file", str, at), at)
        entry_sha = _require(entry, "sha256", str, at)
        if not SHA256.match(entry_sha):
            raise BundleError(f"{at}: expected sha256 as 64 lowercase hex digits, found {_show(entry_sha)}")
        _check_size(_require(entry, "size_bytes", int, at), at)
    fields.update(name=name, format=fmt, file=file, sha256=sha, size_bytes=size)
    if fields.get("quantization") is None:
        fields["quantization"] = "unknown"
    extra = {k: v for k, v in data.items() if k not in known}
    return Variant(**fields, extra=extra)


def parse_manifest(text: str, source: str = MANIFEST_NAME) -> Manifest:
    """Parse manifest JSON text into a Manifest, raising BundleError on anything invalid."""
    data = _load_json(text, source)
    if not isinstance(data, dict):
        raise BundleError(f"{source}: expected a JSON object, found {type(data).__name__}")
    version = data.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise SchemaVersionError(f"{source}: schema_version missing or not an integer (expected an integer, found {_show(version)})")
    if version not in READABLE_SCHEMA_VERSIONS:
        raise SchemaVersionError(
            f"{source}: schema_version {version} is not supported "
            f"(expected {', '.join(map(str, READABLE_SCHEMA_VERSIONS))}, found {version}); "
            "upgrade edgert to read this bundle"
        )
    model_name = _require(data, "model_name", str, source)
    raw_variants = _require(data, "variants", list, source)
    variants = [_parse_variant(v, i) for i, v in enumerate(raw_variants)]
    seen: Dict[str, str] = {}
    for variant in variants:
        if variant.name in seen:
            raise BundleError(f"{source}: expected unique variant names, found {variant.name!r} twice")
        seen[variant.name] = variant.file
    files = [f["file"] for v in variants for f in v.all_files()]
    if len(set(files)) != len(files):
        twice = next(f for f in files if files.count(f) > 1)
        raise BundleError(f"{source}: expected one variant per file, found two pointing at {_show(twice)}")
    accuracy = data.get("accuracy_table", [])
    if not isinstance(accuracy, list) or not all(isinstance(row, dict) for row in accuracy):
        raise BundleError(f"{source}: expected accuracy_table to be a list of objects, found {_show(accuracy, 60)}")
    policies = data.get("policy_table", [])
    if not isinstance(policies, list) or not all(isinstance(row, dict) for row in policies):
        raise BundleError(f"{source}: expected policy_table to be a list of objects, found {_show(policies, 60)}")
    created_by = data.get("created_by", "")
    if not isinstance(created_by, str):
        raise BundleError(f"{source}: expected created_by to be a string, found {type(created_by).__name__}")
    known = {"schema_version", "model_name", "variants", "created_by", "accuracy_table", "policy_table"}
    return Manifest(
        model_name=model_name,
        variants=variants,
        schema_version=version,
        created_by=created_by,
        accuracy_table=accuracy,
        policy_table=policies,
        extra={k: v for k, v in data.items() if k not in known},
    )
