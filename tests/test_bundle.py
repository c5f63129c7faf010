import json
import os

import pytest

from edgert.bundle import MANIFEST_NAME, Bundle, pack, parse_manifest
from edgert.errors import (BundleError, IntegrityError, ModelFileError, SchemaVersionError,
                           UnknownVariantError, UnsafePathError, UsageError)

from gguf_factory import default_metadata, write_gguf


@pytest.fixture
def tiny(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    return write_gguf(src / "Tiny-Model.F32.gguf", metadata=default_metadata(name="Tiny Model"))


def manifest_of(bundle_dir):
    return json.loads((bundle_dir / MANIFEST_NAME).read_text())


def test_pack_writes_manifest_with_all_fields(tiny, tmp_path):
    bundle = pack([tiny], tmp_path / "b")
    data = manifest_of(tmp_path / "b")
    assert data["schema_version"] == 1
    (variant,) = data["variants"]
    assert variant["name"] == "tiny-model-f32"
    assert variant["format"] == "gguf" and variant["quantization"] == "F32"
    assert variant["file"] == "tiny-model-f32.gguf"
    assert variant["size_bytes"] == tiny.stat().st_size
    assert variant["parameter_count"] == 40 and variant["context_length"] == 256
    assert variant["chat_template"] == "{{ messages[0]['content'] }}"
    assert variant["tokenizer"]["vocab_size"] == 3
    assert variant["provenance"]["source_file"] == tiny.name
    assert (tmp_path / "b" / variant["file"]).read_bytes() == tiny.read_bytes()
    assert Bundle.open(tmp_path / "b").variant().sha256 == bundle.variant().sha256
    assert not [p for p in (tmp_path / "b").iterdir() if p.name.startswith(".edgert-tmp")]


def test_pack_extends_an_existing_bundle_and_refuses_duplicates(tiny, tmp_path):
    out = tmp_path / "b"
    pack([tiny], out)
    before = (out / MANIFEST_NAME).read_bytes()
    with pytest.raises(BundleError, match="already exists"):
        pack([tiny], out)
    assert (out / MANIFEST_NAME).read_bytes() == before
    pack([tiny], out, names=["second"])
    assert [v.name for v in Bundle.open(out).variants] == ["tiny-model-f32", "second"]


def test_pack_refuses_bad_inputs_and_writes_nothing(tiny, tmp_path):
    out = tmp_path / "b"
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all")
    with pytest.raises(ModelFileError, match="expected magic"):
        pack([tiny, bad], out)
    assert not out.exists()
    with pytest.raises(BundleError, match="not found"):
        pack([tmp_path / "missing.gguf"], out)
    with pytest.raises(UsageError, match="expected a .gguf"):
        pack([_touch(tmp_path / "model.bin")], out)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    with pytest.raises(BundleError, match="not empty"):
        pack([tiny], tmp_path / "other")


def _touch(path):
    path.write_bytes(b"x")
    return path


def test_open_rejects_missing_artifact(tiny, tmp_path):
    out = tmp_path / "b"
    pack([tiny], out)
    (out / "tiny-model-f32.gguf").unlink()
    with pytest.raises(BundleError, match="artifact 'tiny-model-f32.gguf' is missing"):
        Bundle.open(out)


def test_flipped_byte_is_refused_before_use(tiny, tmp_path):
    out = tmp_path / "b"
    pack([tiny], out)
    artifact = out / "tiny-model-f32.gguf"
    data = bytearray(artifact.read_bytes())
    data[-1] ^= 0x01
    artifact.write_bytes(bytes(data))
    bundle = Bundle.open(out)  # same size: only the hash can tell
    with pytest.raises(IntegrityError, match="sha256 .* manifest says"):
        bundle.artifact(bundle.variant())


def test_size_mismatch_is_refused_at_open(tiny, tmp_path):
    out = tmp_path / "b"
    pack([tiny], out)
    with open(out / "tiny-model-f32.gguf", "ab") as handle:
        handle.write(b"extra")
    with pytest.raises(IntegrityError, match="bytes, manifest says"):
        Bundle.open(out)


@pytest.mark.parametrize("path", ["../escape.gguf", "/etc/passwd", "a/../../x.gguf", "sub\\..\\x.gguf"])
def test_paths_leaving_the_bundle_are_refused(tiny, tmp_path, path):
    out = tmp_path / "b"
    pack([tiny], out)
    data = manifest_of(out)
    data["variants"][0]["file"] = path
    (out / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(UnsafePathError):
        Bundle.open(out)


def test_symlink_out_of_the_bundle_is_refused(tiny, tmp_path):
    out = tmp_path / "b"
    pack([tiny], out)
    artifact = out / "tiny-model-f32.gguf"
    outside = tmp_path / "outside.gguf"
    artifact.rename(outside)
    os.symlink(outside, artifact)
    with pytest.raises(UnsafePathError, match="outside the bundle"):
        Bundle.open(out)


def test_unknown_schema_version(tiny, tmp_path):
    out = tmp_path / "b"
    pack([tiny], out)
    data = manifest_of(out)
    data["schema_version"] = 99
    (out / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(SchemaVersionError, match="schema_version 99 is not supported"):
        Bundle.open(out)


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "not valid JSON"),
        ("[]", "expected a JSON object"),
        ('{"schema_version": 1}', "missing required field 'model_name'"),
        ('{"schema_version": 1, "model_name": "m", "variants": [{"name": "x"}]}', "missing required field 'format'"),
        ('{"schema_version": "1"}', "schema_version missing or not an integer"),
    ],
)
def test_malformed_manifests(text, message):
    with pytest.raises(BundleError, match=message):
        parse_manifest(text)


def test_manifest_roundtrip_keeps_unknown_keys(tiny, tmp_path):
    out = tmp_path / "b"
    pack([tiny], out)
    data = manifest_of(out)
    data["future_field"] = {"a": 1}
    data["variants"][0]["future_variant_field"] = [1, 2]
    manifest = parse_manifest(json.dumps(data))
    assert json.loads(manifest.to_json()) == data


def test_unknown_variant_lists_the_known_ones(tiny, tmp_path):
    out = tmp_path / "b"
    pack([tiny], out)
    with pytest.raises(UnknownVariantError, match="unknown variant 'q9'; this bundle has: tiny-model-f32"):
        Bundle.open(out).variant("q9")


def test_missing_bundle_and_plain_file(tmp_path):
    with pytest.raises(BundleError, match="bundle not found"):
        Bundle.open(tmp_path / "nope")
    (tmp_path / "f").write_text("x")
    with pytest.raises(BundleError, match="found a file"):
        Bundle.open(tmp_path / "f")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="edgert.json is missing"):
        Bundle.open(tmp_path / "empty")


def test_real_smollm2_bundle(smollm2_bundle, smollm2_path):
    bundle = Bundle.open(smollm2_bundle)
    variant = bundle.variant()
    assert variant.name == "smollm2-135m-instruct-q4_1"
    assert variant.quantization == "Q4_1" and variant.architecture == "llama"
    assert variant.size_bytes == smollm2_path.stat().st_size
    bundle.verify()


# ------------------------------------------------------------- one writer at a time
import dataclasses  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

from edgert.bundle import BundleWriter, update_manifest  # noqa: E402
from edgert.bundle import writer as writer_module  # noqa: E402
from edgert.fileio import LOCK_NAME  # noqa: E402

HOLD_LOCK = r"""
import sys, time
from edgert.bundle import BundleWriter
with BundleWriter(sys.argv[1]) as writer:
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def hold_lock(bundle, seconds):
    """Another process holding the bundle's lock for ``seconds`` (returned once it holds it)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(bundle), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_two_packs_of_different_variants_at_once_keep_both(tiny, tmp_path):
    out = tmp_path / "b"
    pack([tiny], out, names=["base"])
    errors = []

    def run(name):
        try:
            pack([tiny], out, names=[name])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    with BundleWriter(out) as first:  # the first writer holds the lock while the second starts
        second = threading.Thread(target=run, args=("second",))
        second.start()
        time.sleep(0.3)
        assert second.is_alive()  # waiting for the lock, not writing
        first.reserve("first", "first.gguf")
        digest = first.add_file(tiny, "first", mode="copy")
        variant = Bundle.open(out).variant("base")
        first.commit([dataclasses.replace(variant, name="first", file="first.gguf", sha256=digest)], "tiny")
    second.join(30)
    assert not errors and not second.is_alive()
    bundle = Bundle.open(out)
    assert [v.name for v in bundle.variants] == ["base", "first", "second"]
    bundle.verify()
    assert not (out / LOCK_NAME).exists()


def test_a_second_writer_is_refused_clearly_after_the_timeout(tiny, tmp_path, monkeypatch):
    out = tmp_path / "b"
    pack([tiny], out)
    before = (out / MANIFEST_NAME).read_bytes()
    monkeypatch.setattr(writer_module, "LOCK_TIMEOUT_S", 0.3)
    holder = hold_lock(out, 5)
    try:
        with pytest.raises(BundleError) as caught:
            pack([tiny], out, names=["other"])
    finally:
        holder.kill()
        holder.wait()
    message = str(caught.value)
    assert "\n" not in message and str(out) in message and "another edgert process is writing to it" in message
    assert (out / MANIFEST_NAME).read_bytes() == before and not (out / "other.gguf").exists()
    pack([tiny], out, names=["other"])  # the killed holder's lock file does not block the next writer
    assert [v.name for v in Bundle.open(out).variants] == ["tiny-model-f32", "other"]
    assert not (out / LOCK_NAME).exists()


def test_a_calibration_save_racing_a_pack_keeps_both(tiny, tmp_path):
    """calibrate holds a Bundle opened before a pack added a variant; its table save re-reads
    the manifest under the lock, so the pack's variant survives (the old save dropped it)."""
    out = tmp_path / "b"
    pack([tiny], out)
    stale = Bundle.open(out)  # what a calibration run opened at its start
    holder = hold_lock(out, 1.0)  # a writer busy while the calibration finishes
    try:
        row = {"task_set": "mine", "variant": "tiny-model-f32", "accuracy": 0.5}
        racing = threading.Thread(target=pack, args=([tiny], out), kwargs={"names": ["added-meanwhile"]})
        racing.start()
        saved = update_manifest(stale.root, lambda manifest: manifest.accuracy_table.append(row))
        racing.join(30)
    finally:
        holder.wait(30)
    bundle = Bundle.open(out)
    assert {v.name for v in bundle.variants} == {"tiny-model-f32", "added-meanwhile"}
    assert bundle.manifest.accuracy_table == [row]
    assert saved.manifest.accuracy_table == [row]


def test_the_lock_file_is_not_bundle_content(tiny, tmp_path):
    out = tmp_path / "new"
    out.mkdir()
    (out / LOCK_NAME).write_bytes(b"")  # left by a killed writer
    assert Bundle.open_for_writing(out) is None
    pack([tiny], out)
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_NAME, "tiny-model-f32.gguf"]
    with BundleWriter(out) as writer:
        assert (out / LOCK_NAME).exists() and [v.name for v in writer.existing.variants] == ["tiny-model-f32"]
        Bundle.open(out).verify()
    assert not (out / LOCK_NAME).exists()
