"""The edgert exception tree.

Every error a user can cause derives from ``EdgertError``; the CLI prints these as one
line and exits non-zero. Anything else is a bug and keeps its traceback. Messages say
what was expected and what was found.
"""

from __future__ import annotations


class EdgertError(Exception):
    """Root of all user-facing edgert errors."""

    exit_code = 1


class UsageError(EdgertError):
    """An argument or option has a value edgert cannot use.

    field: the name of the field it is about, where there is one (``Request`` and
    ``SamplingParams`` fields), so front ends can point at the option or key the user typed."""

    exit_code = 2

    def __init__(self, message: str, *, field: "str | None" = None):
        super().__init__(message)
        self.field = field


class ModelFileError(EdgertError):
    """A model file is missing, unreadable or not in the format it claims."""


class BundleError(EdgertError):
    """A bundle is missing, malformed, or does not match its manifest."""


class IntegrityError(BundleError):
    """An artifact's bytes do not match the sha256 or size recorded in the manifest."""


class UnsafePathError(BundleError):
    """A manifest names a path that would leave the bundle directory."""


class SchemaVersionError(BundleError):
    """The manifest was written by a schema version this edgert does not read."""


class UnknownVariantError(BundleError):
    """A variant name that the bundle does not contain."""


class BackendUnavailableError(EdgertError):
    """An optional engine (package or hardware) is not present."""


class RunnerStateError(EdgertError):
    """A runner method was called in the wrong state (not loaded, already closed)."""


class DeadlineError(EdgertError):
    """The deadline cannot be met at all, e.g. it is shorter than loading the model."""


class GenerationError(EdgertError):
    """The engine failed while evaluating a prompt or a token."""


def unavailable(what: str, extra: str) -> BackendUnavailableError:
    """The standard message for a missing optional dependency."""
    return BackendUnavailableError(f"{what} unavailable: install edgert[{extra}]")


class DeviceError(EdgertError):
    """A device or its vendor library (NVML, sysfs, vcgencmd) failed or reported nonsense."""


class SensorUnavailable(DeviceError):
    """A power/energy sensor is absent or not readable (e.g. RAPL without permission)."""


class ProfileError(EdgertError):
    """A device profile or datasheet prior is missing, malformed, or of an unknown version."""


class DiskFullError(EdgertError):
    """A write ran out of disk space (ENOSPC/EDQUOT); nothing was left at the final path."""


class InsufficientMemoryError(EdgertError):
    """A model, its KV cache and working buffers would not fit in the memory available."""


class ConversionError(EdgertError):
    """A conversion could not be done (unsupported model, tool failure, bad option)."""


class QualityGateError(ConversionError):
    """A converted artifact differs from its source by more than the thresholds allow."""
