"""`edgert convert` as a user drives it: pre-flight refusals, one-line errors, interruption."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from edgert.bundle import MANIFEST_NAME, Bundle
from edgert.cli.main import main

from conftest import make_tiny


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def tiny_llama(smollm2_tokenizer_dir, tmp_path):
    return make_tiny("llama", tmp_path / "tiny-llama", smollm2_tokenizer_dir)


def test_convert_cli_adds_a_variant_and_prints_the_gate(tiny_llama, tmp_path):
    result = invoke("convert", tiny_llama, "--to", "gguf", "--quant", "F16", "--out", tmp_path / "b", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    (variant,) = data["added"]
    assert variant["name"] == "tiny-llama-f16" and variant["quality_gate"]["passed"]
    assert Bundle.open(tmp_path / "b").variant("tiny-llama-f16").quantization == "F16"


def test_preflight_refuses_without_disk_space(tiny_llama, tmp_path, monkeypatch):
    import shutil as shutil_module
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil_module, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    result = invoke("convert", tiny_llama, "--to", "gguf", "--quant", "F32,F16", "--out", tmp_path / "b")
    assert result.exit_code == 1
    assert "not enough disk space" in result.stderr and "GB free" in result.stderr
    assert not (tmp_path / "b").exists()


def test_cli_errors_are_one_line(tiny_llama, tmp_path):
    cases = [
        (["convert", tmp_path / "nope", "--to", "gguf", "--quant", "F16", "--out", tmp_path / "b"], "source not found"),
        (["convert", tiny_llama, "--to", "gguf", "--quant", "Q9", "--out", tmp_path / "b"], "--quant Q9 is not available"),
        (["convert", tiny_llama, "--to", "gguf", "--quant", "F16", "--out", tmp_path / "b", "--gate", "kld"], "--gate: expected NAME=NUMBER"),
        (["convert", tiny_llama, "--to", "tensorrt", "--quant", "fp16", "--out", tmp_path / "b"], "TensorRT unavailable"),
    ]
    for args, fragment in cases:
        result = invoke(*args)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.exit_code != 0 and len(lines) == 1 and fragment in lines[0], (args, result.stderr)
    assert not (tmp_path / "b").exists()


def test_sigkill_during_conversion_leaves_the_bundle_as_it_was(tiny_llama, smollm2_bundle, tmp_path):
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(smollm2_bundle, bundle)
    before = {p.name: p.stat().st_size for p in bundle.iterdir()}
    manifest = (bundle / MANIFEST_NAME).read_bytes()
    script = os.path.join(os.path.dirname(sys.executable), "edgert")
    proc = subprocess.Popen([script, "convert", str(tiny_llama), "--to", "gguf", "--quant", "F32,F16,Q8_0",
                             "--out", str(bundle)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(6)  # inside the conversion or the gate
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert (bundle / MANIFEST_NAME).read_bytes() == manifest
    assert {p.name: p.stat().st_size for p in bundle.iterdir()} == before
    Bundle.open(bundle).verify()
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".edgert-staging-")]
    result = invoke("convert", tiny_llama, "--to", "gguf", "--quant", "F16", "--out", bundle)
    assert result.exit_code == 0, result.output
    assert not any(p.exists() for p in leftovers)  # the next conversion cleans up after the killed one
    assert "tiny-llama-f16" in [v.name for v in Bundle.open(bundle).variants]
