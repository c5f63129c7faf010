"""Fixtures for the device tests: copies of the fake filesystem roots in tests/fixtures/sysfs."""

import shutil
from pathlib import Path

import pytest
from device_fakes import SYSFS


@pytest.fixture
def fake_root(tmp_path):
    """Copy a named fake root to a temporary directory (symlinks kept) and return it."""

    def copy(name: str) -> Path:
        target = tmp_path / name
        shutil.copytree(SYSFS / name, target, symlinks=True)
        return target

    return copy
