"""A real `edgert profile --quick` of this CPU with the SmolLM2 bundle (about a minute)."""

import json

import pytest
from click.testing import CliRunner

from edgert.cli.main import main
from edgert.profiler.profile import DeviceProfile


@pytest.fixture(scope="module")
def quick_profile(smollm2_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("profile") / "cpu.json"
    result = CliRunner().invoke(main, ["profile", "--bundle", str(smollm2_bundle), "--quick", "--out", str(out), "--threads", "2"])
    assert result.exit_code == 0, result.output
    return out, result


def test_quick_profile_writes_a_usable_profile(quick_profile):
    out, result = quick_profile
    data = json.loads(out.read_text())
    assert data["schema_version"] == 1 and data["kind"] == "measured"
    assert data["device"]["kind"] == "cpu"
    assert data["sensor"]["provenance"] == "estimated"  # no powercap / hwmon on this machine
    variant = data["variants"]["smollm2-135m-instruct-q4_1"]
    assert len(variant["samples"]["prefill"]) == 6 and len(variant["samples"]["decode"]) == 48
    assert variant["energy"]["provenance"] == "estimated" and variant["energy"]["decode_j_per_token"] > 0
    spread = variant["fit_error"]["repeat_spread_pct"]  # repeats of one measurement: the noise floor
    assert spread["reps"] == 2 and 0 <= spread["prefill"] < 100 and 0 <= spread["decode"] < 100
    held = variant["fit_error"]["decode_held_out"]
    assert held["n"] == 16 and held["mape_pct"] < 25  # 2 held-out contexts x 8 batches; loose: the machine is shared; bench/predict.py measures accuracy
    profile = DeviceProfile.load(out)
    # more work costs more time
    assert profile.predict_decode_step_ms("smollm2-135m-instruct-q4_1", 1000, 1) > \
        profile.predict_decode_step_ms("smollm2-135m-instruct-q4_1", 10, 1)
    assert profile.predict_prefill_ms("smollm2-135m-instruct-q4_1", 800) > \
        profile.predict_prefill_ms("smollm2-135m-instruct-q4_1", 100)
    png = out.with_suffix(".png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert "smollm2-135m-instruct-q4_1" in result.stdout
    state = data["state"]  # the device state before and after measuring
    assert state["start"]["key"] == state["end"]["key"] and state["changes"] == []
    assert all(state["start"][k] is not None or k in state["start"]["unreadable"] for k in ("cpu_freq_mhz", "cpu_governor"))


def test_profile_refuses_bad_arguments_before_measuring(smollm2_bundle, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["profile", "--bundle", str(smollm2_bundle), "--variant", "nope", "--out", str(tmp_path / "p.json")])
    assert result.exit_code == 1 and "unknown variant 'nope'" in result.stderr
    result = runner.invoke(main, ["profile", "--prior", "jetson-orin-nano-9gb", "--out", str(tmp_path / "p.json")])
    assert result.exit_code == 1 and "jetson-orin-nano-8gb" in result.stderr
    assert not (tmp_path / "p.json").exists()


def test_a_state_change_during_profiling_is_warned_about():
    profile = DeviceProfile(device={"kind": "cpu"}, peak_flops=1e9, bandwidth_bytes_per_s=1e9, variants={},
                            state={"changes": ["device state changed from mode=0 to mode=1"]})
    assert "device state changed during profiling (device state changed from mode=0 to mode=1)" in profile.state_warning()
    assert DeviceProfile(device={}, peak_flops=1, bandwidth_bytes_per_s=1, variants={}).state_warning() is None


def test_noise_warning_names_the_spread_and_suggests_fewer_threads(quick_profile):
    profile = DeviceProfile.load(quick_profile[0])
    variant = profile.variants["smollm2-135m-instruct-q4_1"]
    variant.fit_error["repeat_spread_pct"] = {"prefill": 4.0, "decode": 6.0, "reps": 2}
    assert profile.noise_warning() is None
    variant.fit_error["repeat_spread_pct"] = {"prefill": 4.0, "decode": 17.0, "reps": 2}
    warning = profile.noise_warning()
    assert "17% (decode)" in warning and "run with 1 thread (--threads 1" in warning  # profiled at 2 threads
    variant.threads = 1
    assert "--threads" not in profile.noise_warning()
    variant.fit_error["repeat_spread_pct"] = {"prefill": None, "decode": 17.0, "reps": 1}  # prefill not repeated
    assert "17% (decode)" in profile.noise_warning() and "prefill" not in profile.noise_warning()
    del variant.fit_error["repeat_spread_pct"]  # a profile written before the spread was recorded
    assert profile.noise_warning() is None
