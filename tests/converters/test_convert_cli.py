"""`edgert convert` as a user drives it: pre-flight refusals, one-line errors, interruption."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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


def test_gate_names_and_values_are_checked_before_any_work(tiny_llama, tmp_path):
    cases = [
        (["--to", "gguf", "--quant", "F16", "--gate", "typo=1"],
         "--gate typo: expected one of max_mean_kld, min_top1, max_ppl_increase_pct"),
        (["--to", "gguf", "--quant", "F16", "--gate", "max_abs_diff=0.1"], "--gate max_abs_diff: expected one of"),
        (["--to", "onnx", "--quant", "fp32", "--gate", "typo=1"],
         "expected one of max_mean_kld, min_top1, max_ppl_increase_pct, max_abs_diff, min_cosine"),
        (["--to", "gguf", "--quant", "F16", "--gate", "min_top1=1.5"], "--gate min_top1=1.5: expected between 0 and 1"),
        (["--to", "gguf", "--quant", "F16", "--gate", "max_mean_kld=nan"], "expected a finite number >= 0"),
        # an LLM is gated on next-token distributions: the output-gate limits do not apply to it
        (["--to", "onnx", "--quant", "fp32", "--gate", "max_abs_diff=0.1"],
         "--gate max_abs_diff: expected one of max_mean_kld, min_top1, max_ppl_increase_pct (LlamaForCausalLM"),
    ]
    for args, fragment in cases:
        started = time.monotonic()
        result = invoke("convert", tiny_llama, "--out", tmp_path / "b", *args)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and fragment in lines[0], (args, result.stderr)
        assert time.monotonic() - started < 20, args  # refused up front, not after a conversion
        assert not (tmp_path / "b").exists()


def test_onnx_int4_is_named_by_its_block_size_and_tool_output_goes_to_the_log(tiny_llama, tmp_path, monkeypatch):
    """`--quant int4,int8-dynamic` used to die in the commit with KeyError: 'int4-block32'."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    loose = ["--gate", "max_mean_kld=100", "--gate", "min_top1=0", "--gate", "max_ppl_increase_pct=1e9"]
    result = invoke("convert", tiny_llama, "--to", "onnx", "--quant", "int4,int8-dynamic", "--out", tmp_path / "b",
                    "--threads", "2", *loose)
    assert result.exit_code == 0, result.output
    bundle = Bundle.open(tmp_path / "b")
    assert {v.name: v.quantization for v in bundle.variants} == {"tiny-llama-onnx-int4-block32": "int4-block32",
                                                                  "tiny-llama-onnx-int8-dynamic": "int8-dynamic"}
    bundle.verify()
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith(f"third-party log: {tmp_path / 'cache' / 'edgert' / 'logs'}/convert-"), last
    log = Path(last.split(": ", 1)[1])
    assert log.is_file()
    assert "INFO" not in result.stderr and "INFO" not in result.stdout  # quantizer chatter stays out of the display
