"""The bundle: a directory with a manifest (edgert.json) and verified artifact files."""

from .bundle import Bundle
from .manifest import MANIFEST_NAME, SCHEMA_VERSION, Manifest, Variant, parse_manifest
from .pack import pack
from .writer import BundleWriter, update_manifest

__all__ = ["Bundle", "BundleWriter", "MANIFEST_NAME", "SCHEMA_VERSION", "Manifest", "Variant", "pack", "parse_manifest",
           "update_manifest"]
