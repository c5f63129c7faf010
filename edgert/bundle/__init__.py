"""The bundle: a directory with a manifest (edgert.json) and verified artifact files."""

from .bundle import Bundle
from .manifest import MANIFEST_NAME, SCHEMA_VERSION, Manifest, Variant, parse_manifest
from .pack import pack

__all__ = ["Bundle", "MANIFEST_NAME", "SCHEMA_VERSION", "Manifest", "Variant", "pack", "parse_manifest"]
