"""The examples in examples/ run as a user would run them, on the real SmolLM2 bundle."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from test_runtime_adaptive import calibrated_copy, synthetic_profile_for

pytestmark = pytest.mark.slow
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(*args, timeout=120):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def test_robot_loop_keeps_every_cycle_deadline(smollm2_bundle):
    out = _run(EXAMPLES / "robot_loop.py", "--bundle", smollm2_bundle, "--hz", "4", "--deadline-ms", "200",
               "--cycles", "6", "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["cycles"] == 6 and summary["deadline_hit_rate"] == 1.0
    assert summary["latency_ms_max"] <= 200
    assert sum(summary["decisions"].values()) == 6  # every cycle acted (STOP when the answer was unclear)
    assert summary["safe_fallbacks"] < 6  # with the prompt prefix cached, the model answers in time


def test_robot_loop_with_the_planner(adaptive_bundle_path):
    bundle, profile = adaptive_bundle_path
    out = _run(EXAMPLES / "robot_loop.py", "--bundle", bundle, "--profile", profile, "--hz", "2",
               "--deadline-ms", "400", "--cycles", "3")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count(" ok ") == 3 and "3/3 decisions by their deadline" in out.stdout


def test_robot_loop_refuses_bad_settings_in_one_line(smollm2_bundle, tmp_path):
    out = _run(EXAMPLES / "robot_loop.py", "--bundle", smollm2_bundle, "--hz", "10", "--deadline-ms", "500")
    assert out.returncode == 2 and "longer than the cycle" in out.stderr
    missing = _run(EXAMPLES / "robot_loop.py", "--bundle", tmp_path / "nothing")
    assert missing.returncode == 2 and "bundle not found" in missing.stderr and "Traceback" not in missing.stderr


@pytest.fixture(scope="module")
def adaptive_bundle_path(smollm2_bundle, tmp_path_factory):
    root = calibrated_copy(smollm2_bundle, tmp_path_factory.mktemp("robot") / "bundle",
                           [("greedy", 1, 0, 16, 40), ("greedy", 1, 0, 48, 45)])
    profile = root.parent / "profile.json"
    synthetic_profile_for(root).save(profile)
    return root, profile
