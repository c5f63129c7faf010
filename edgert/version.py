"""The package version, in one place (modules import it from here, not from the package root,
so that no module imports ``edgert/__init__`` back)."""

__version__ = "0.1.0"
