"""The edgert command, driven as a user would (click's runner and the installed script)."""

import json
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from edgert.bundle import MANIFEST_NAME
from edgert.cli.main import main, parse_duration_s
from edgert.errors import UsageError

from gguf_factory import default_metadata, write_gguf


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(result, fragment):
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output


def test_help_lists_commands():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("pack", "inspect", "run", "demo"):
        assert command in result.output


@pytest.mark.parametrize("text, seconds", [("2s", 2.0), ("1.5", 1.5), ("250ms", 0.25), (" 10 s", 10.0)])
def test_durations(text, seconds):
    assert parse_duration_s(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["abc", "-1s", "0", "2h", ""])
def test_bad_durations(text):
    with pytest.raises(UsageError, match="--deadline"):
        parse_duration_s(text)


def test_pack_then_inspect_json(tmp_path):
    model = write_gguf(tmp_path / "tiny.gguf", metadata=default_metadata(name="Tiny"))
    result = invoke("pack", model, "--out", tmp_path / "b")
    assert result.exit_code == 0, result.output
    assert "tiny-f32" in result.stdout
    inspected = invoke("inspect", tmp_path / "b", "--json")
    assert inspected.exit_code == 0
    data = json.loads(inspected.stdout)
    assert data["verified"] is True
    assert data["variants"][0]["name"] == "tiny-f32"


def test_run_streams_answer_and_summary(smollm2_bundle):
    result = invoke("run", smollm2_bundle, "Name a color.", "--max-tokens", 12, "--deadline", "20s", "--threads", 2)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip()
    summary = result.stderr.strip().splitlines()[-1]
    assert "[smollm2-135m-instruct-q4_1]" in summary
    assert "tok/s" in summary and "deadline 20000 ms: met" in summary


def test_run_json(smollm2_bundle):
    result = invoke("run", smollm2_bundle, "Write a long story.", "--json", "--deadline", "1500ms", "--max-tokens", 1000)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["finish_reason"] == "deadline" and data["deadline_cut"] is True
    assert data["variant"] == "smollm2-135m-instruct-q4_1"


def test_run_errors_are_one_line(smollm2_bundle, tmp_path):
    one_line_error(invoke("run", tmp_path / "nope", "hi"), "bundle not found")
    one_line_error(invoke("run", smollm2_bundle, "hi", "--variant", "q8"), "unknown variant 'q8'")
    one_line_error(invoke("run", smollm2_bundle, "hi", "--deadline", "soon"), "expected a duration")
    one_line_error(invoke("run", smollm2_bundle, "hi", "--deadline", "1ms"), "shorter than loading the model")


def test_tampered_and_future_bundles_are_refused(smollm2_bundle, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(smollm2_bundle, copy)
    artifact = next(copy.glob("*.gguf"))
    with open(artifact, "r+b") as handle:
        handle.seek(5_000_000)
        byte = handle.read(1)
        handle.seek(5_000_000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    one_line_error(invoke("run", copy, "hi"), "sha256")
    one_line_error(invoke("inspect", copy), "sha256")
    manifest = json.loads((copy / MANIFEST_NAME).read_text())
    manifest["schema_version"] = 7
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    one_line_error(invoke("inspect", copy), "schema_version 7 is not supported")


def test_installed_script_reports_errors_without_traceback(tmp_path):
    script = shutil.which("edgert") or str(__import__("pathlib").Path(sys.executable).parent / "edgert")
    proc = subprocess.run([script, "inspect", str(tmp_path / "missing")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: bundle not found: expected a bundle directory at {tmp_path / 'missing'}, found nothing"
    assert proc.stdout == ""


def test_serve_refuses_bad_settings_in_one_line_before_loading(smollm2_bundle):
    import socket

    assert "deadline_ms" in invoke("serve", "--help").output
    bad = invoke("serve", smollm2_bundle, "--default-deadline", "soon")
    assert bad.exit_code == 2 and "--default-deadline: expected a duration" in bad.output
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        busy = invoke("serve", smollm2_bundle, "--port", port)
    assert busy.exit_code == 2 and f"127.0.0.1:{port} unavailable" in busy.output
    with socket.create_server(("127.0.0.1", 0)) as probe:
        free = probe.getsockname()[1]
    missing = invoke("serve", smollm2_bundle.parent / "no-such-bundle", "--port", free)
    assert missing.exit_code != 0 and "bundle not found" in missing.output
    assert invoke("serve", smollm2_bundle, "--port", 0).exit_code == 2  # a port is needed to tell clients
