"""The edgert command, driven as a user would (click's runner and the installed script)."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from edgert.bundle import MANIFEST_NAME
from edgert.cli.main import main, parse_duration_s
from edgert.errors import UsageError

from gguf_factory import default_metadata, write_gguf
from test_demo import FakeRuntime, fakes  # noqa: F401  (fakes: the demo's fixture)


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
    state = data["device_state"]  # what this machine can tell about its clocks and temperatures
    for name in ("cpu_freq_mhz", "cpu_governor", "temperatures_c"):
        assert state[name] or state["unreadable"].get(name), (name, state)
    assert state["key"]


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


# ------------------------------------------------------------------- progress display
def test_progress_bars_continue_a_count_and_start_a_bar_per_step():
    from edgert.cli.render import ProgressBars

    with ProgressBars() as bars:
        bars("calibrating", 0, 4)
        for done in range(1, 5):  # the label changes, the count goes on: one bar
            bars(f"variant task{done}", done, 4)
        assert len(bars._display.tasks) == 1 and bars._display.tasks[0].description == "variant task4"
        bars("a prefill 64 tokens", 1, 9)  # another total: a new bar
        bars("a decode ctx 64 x8", 9, 9)
        bars("b prefill 64 tokens", 1, 9)  # the count starts again: a new bar
        assert len(bars._display.tasks) == 3
        bars.clear(unit="bytes")
        assert bars._display is None
        bars("copy x", 10, 100)  # the display comes back, counting bytes
        assert len(bars._display.tasks) == 1 and bars.unit == "bytes"
    assert bars._display is None


# ------------------------------------------------------------ tables at 120 columns
LONG_NAMES = {"small": "smollm2-135m-instruct-q4_1", "large": "gemma3-270m-q4_k_m"}


def _render(renderable, width=120) -> str:
    from rich.console import Console

    console = Console(width=width, record=True, color_system=None, file=open(os.devnull, "w"))
    console.print(renderable)
    return console.export_text()


def _profile_and_table():
    from test_planner import TABLE, synthetic_profile

    profile = synthetic_profile()
    for old, new in LONG_NAMES.items():
        v = profile.variants.pop(old)
        v.name = new
        v.energy.update(provenance="estimated", decode_j_per_token=0.123)
        v.fit_error["decode_held_out"]["within_10pct"] = 0.5
        profile.variants[new] = v
    rows = [dict(r, variant=LONG_NAMES[r["variant"]], accuracy=r["correct"] / r["total"], ci_low=0.1, ci_high=0.9,
                 mean_samples=3.0, mean_tokens=40.0) for r in TABLE]
    return profile, rows


def _assert_whole(text, *cells):
    assert "…" not in text, text
    for cell in cells:
        assert cell in text, (cell, text)
    assert max(len(line) for line in text.splitlines()) <= 120


def test_profile_plan_and_accuracy_tables_are_not_cut_at_120_columns():
    from edgert.cli.render import accuracy_table as _accuracy_table, plan_table as _plan_table, profile_table as _profile_table
    from edgert.planner import Limits, plan

    profile, rows = _profile_and_table()
    _assert_whole(_render(_profile_table(profile)), "0.123 (estimated)", "smollm2-135m-instruct-q4_1", "prefill",
                  "tok/s @512", "held-out MAPE", "pre / dec", "±10%", "J/token")
    result = plan(rows, profile, Limits(0.5, power_w=5.0))
    text = _render(_plan_table(result))
    _assert_whole(text, "configuration", "accuracy", "latency p95", "fits", "chosen", "needs ")
    for c in result.frontier:  # labels stay on one line
        assert c.config.label in text
    _assert_whole(_render(_accuracy_table(rows, "t")), "smollm2-135m-instruct-q4_1", "95% CI", "samples", "tokens")


def test_variants_table_is_not_cut_at_120_columns(tmp_path):
    from edgert.bundle import Bundle
    from edgert.cli.render import variants_table as _variants_table

    model = write_gguf(tmp_path / "tiny.gguf", metadata=default_metadata(name="Tiny"))
    assert invoke("pack", model, "--out", tmp_path / "b", "--name", "smollm2-135m-instruct-q4_1-long").exit_code == 0
    text = _render(_variants_table(Bundle.open(tmp_path / "b"), verified=True))
    _assert_whole(text, "smollm2-135m-instruct-q4_1-long", "template", "sha256", "  ok")


# ---------------------------------------------------------------------------- demo

def test_demo_renders_every_step_and_the_legend_only_when_needed(tmp_path, fakes, monkeypatch):
    result = invoke("demo", "--bundle", tmp_path / "demo", "--deadlines", "0.5s,2s", "--threads", 2)
    assert result.exit_code == 0, result.output
    for line in ("1/4 packing SmolLM2-135M-Instruct", "2/4 profiling this machine", "3/4 calibrating accuracy",
                 "4/4 answering held-out questions"):
        assert line in result.stderr
    assert "answers under deadlines" in result.stdout and "planner's choice" in result.stdout
    assert "greedy answer 24 2 threads" in result.stdout and "Q5:" in result.stdout and "Q6:" not in result.stdout
    assert "…" not in result.output
    assert "no*" not in result.output  # no row is marked, so no legend
    assert "energy: estimated from the TDP" in result.stderr

    monkeypatch.setattr(FakeRuntime, "feasible", False)
    again = invoke("demo", "--bundle", tmp_path / "demo", "--deadlines", "0.5s")
    assert again.exit_code == 0, again.output
    assert "2/4 using the cached profile" in again.stderr and "1/4" not in again.stderr
    assert "no*: no configuration was predicted to fit" in again.stderr and "no*" in again.stdout


def test_demo_refuses_bad_deadlines_in_one_line(fakes):
    one_line_error(invoke("demo", "--deadlines", ","), "--deadlines: expected comma-separated durations")
    one_line_error(invoke("demo", "--deadlines", "1s,soon"), "--deadlines: expected a duration")


# --------------------------------------------------------------- plots need matplotlib
@pytest.fixture()
def no_matplotlib(monkeypatch):
    """An install without the plot extra: importing matplotlib fails."""
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)


@pytest.fixture()
def planned_bundle(tmp_path):
    """A tiny bundle with an accuracy table, and a profile of it."""
    from edgert.bundle import Bundle
    from test_demo import fake_profile

    model = write_gguf(tmp_path / "tiny.gguf", metadata=default_metadata(name="Tiny"))
    assert invoke("pack", model, "--out", tmp_path / "b").exit_code == 0
    manifest_path = tmp_path / "b" / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    manifest["accuracy_table"] = [{"variant": "tiny-f32", "strategy": "greedy", "answer_tokens": 16, "n": 1,
                                   "think_tokens": 0, "task_set": "arith", "correct": 5, "total": 10}]
    manifest_path.write_text(json.dumps(manifest))
    profile_path = tmp_path / "p.json"
    fake_profile(Bundle.open(tmp_path / "b")).save(profile_path)
    return tmp_path / "b", profile_path


def test_plan_skips_the_default_plot_without_matplotlib(planned_bundle, no_matplotlib, tmp_path, monkeypatch):
    bundle, profile = planned_bundle
    monkeypatch.chdir(tmp_path)
    result = invoke("plan", bundle, "--device", profile, "--deadline", "2s")
    assert result.exit_code == 0, result.output
    assert "choice:" in result.stdout and not (tmp_path / "edgert-plan.png").exists()
    notes = [line for line in result.stderr.splitlines() if "matplotlib" in line]
    assert len(notes) == 1 and "pip install 'edgert[plot]'" in notes[0]
    assert "Pareto plot:" not in result.stderr
    one_line_error(invoke("plan", bundle, "--device", profile, "--deadline", "2s", "--plot", tmp_path / "x.png"),
                   "pip install 'edgert[plot]'")
    assert not (tmp_path / "x.png").exists()
    quiet = invoke("plan", bundle, "--device", profile, "--deadline", "2s", "--no-plot")
    assert quiet.exit_code == 0 and "matplotlib" not in quiet.output


def test_plan_still_writes_the_default_plot_with_matplotlib(planned_bundle, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    bundle, profile = planned_bundle
    monkeypatch.chdir(tmp_path)
    result = invoke("plan", bundle, "--device", profile, "--deadline", "2s")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "edgert-plan.png").read_bytes()[:4] == b"\x89PNG" and "Pareto plot: edgert-plan.png" in result.stderr


def test_profile_skips_the_default_plot_without_matplotlib(planned_bundle, no_matplotlib, tmp_path, monkeypatch):
    import edgert.cli.main as cli
    from edgert.bundle import Bundle
    from test_demo import fake_profile

    bundle, _ = planned_bundle
    measured = []
    monkeypatch.setattr(cli, "profile_device", lambda b, **kw: measured.append(b) or fake_profile(Bundle.open(bundle)))
    out = tmp_path / "prof.json"
    result = invoke("profile", "--bundle", bundle, "--out", out)
    assert result.exit_code == 0, result.output
    assert out.exists() and not out.with_suffix(".png").exists() and len(measured) == 1
    notes = [line for line in result.stderr.splitlines() if "matplotlib" in line]
    assert len(notes) == 1 and "pip install 'edgert[plot]'" in notes[0]
    assert "roofline plot" not in result.stderr
    out.unlink()
    # asked for explicitly: a one-line error, before measuring anything
    one_line_error(invoke("profile", "--bundle", bundle, "--out", out, "--plot", tmp_path / "r.png"),
                   "pip install 'edgert[plot]'")
    assert len(measured) == 1 and not out.exists()


def test_profile_still_writes_the_default_plot_with_matplotlib(planned_bundle, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import edgert.cli.main as cli
    from edgert.bundle import Bundle
    from test_demo import fake_profile

    bundle, _ = planned_bundle
    monkeypatch.setattr(cli, "profile_device", lambda b, **kw: fake_profile(Bundle.open(bundle)))
    out = tmp_path / "prof.json"
    result = invoke("profile", "--bundle", bundle, "--out", out)
    assert result.exit_code == 0, result.output
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG" and f"roofline plot: {out.with_suffix('.png')}" in result.stderr
