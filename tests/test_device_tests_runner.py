"""The device-test runner's plan, here where there is no GPU: ``run.sh --dry-run`` lists the
steps with their budget and exits 0; the build uses this GPU's architecture only."""

import importlib.util
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_runner():
    spec = importlib.util.spec_from_file_location("device_tests_run", ROOT / "device_tests" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_lists_the_steps_and_their_budget():
    done = subprocess.run([str(ROOT / "device_tests" / "run.sh"), "--dry-run"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for step in ("1. detect", "2. build", "3. doctor", "4. tests", "5. report"):
        assert any(step in line for line in lines), done.stdout
    total = next(line for line in lines if line.strip().startswith("total"))
    assert int(total.split()[1]) <= 600 and "(limit 600)" in total
    assert "-DGGML_CUDA=on" in done.stdout and "--no-build-isolation" in done.stdout


def test_the_build_targets_the_detected_gpu_architecture_only(tmp_path):
    runner = load_runner()
    sdist = tmp_path / "llama_cpp_python-0.3.36.tar.gz"
    sdist.write_bytes(b"")
    machine = {"gpu": {"name": "NVIDIA H200", "compute_capability": "9.0", "arch": "90"}, "nvcc": "/usr/bin/nvcc"}
    plan = runner.build_plan(machine, sdist)
    assert plan["cmake_args"] == "-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90"
    assert all("sdist" not in m and "GPU" not in m for m in plan["missing"])
    assert "the llama-cpp-python sdist" in runner.build_plan(machine, tmp_path / "absent.tar.gz")["missing"]


def test_junit_outcomes_are_read_into_the_report(tmp_path):
    junit = tmp_path / "junit.xml"
    junit.write_text('<testsuites><testsuite><testcase classname="t" name="a" time="0.5"/>'
                     '<testcase classname="t" name="b"><skipped message="needs an NVIDIA GPU"/></testcase>'
                     '<testcase classname="t" name="c"><failure message="boom"/></testcase></testsuite></testsuites>')
    cases = load_runner().junit_cases(junit)
    assert [(c["name"], c["outcome"]) for c in cases] == [("t::a", "passed"), ("t::b", "skipped"), ("t::c", "failed")]
    assert cases[1]["message"] == "needs an NVIDIA GPU"
