"""Helpers shared by the device tests: the fixture roots and a fake command runner."""

from pathlib import Path

SYSFS = Path(__file__).parent.parent / "fixtures" / "sysfs"


def replying(outputs):
    """A fake ``run``: maps an argv tuple to its stdout, or raises FileNotFoundError."""

    def run(argv):
        key = tuple(argv)
        if key not in outputs:
            raise FileNotFoundError(f"no such command: {argv[0]}")
        return outputs[key]

    return run
