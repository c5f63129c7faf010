"""Device tests in one command, for a fresh Linux machine with an NVIDIA GPU and the CUDA
compiler but no internet: build llama-cpp-python with CUDA for this GPU's architecture only,
run ``edgert doctor`` and the device tests, and write one JSON report.

    python device_tests/run.py [--dry-run] [--sdist FILE] [--model FILE.gguf] [--report FILE]
    device_tests/run.sh ...          (the same)

Steps, each with a time budget (the whole run fits in 10 minutes on a 16-core machine):

1. detect: the GPU (``nvidia-smi``: name, compute capability, driver) and ``nvcc``;
2. build: only if the installed llama-cpp-python cannot offload. pip builds the sdist
   (``--sdist``, ``$EDGERT_LLAMA_SDIST``, or ``device_tests/wheelhouse/llama_cpp_python-*.tar.gz``;
   fetch it beforehand with ``pip download --no-deps --no-binary :all: llama-cpp-python==VERSION
   -d device_tests/wheelhouse``) with ``-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=<this GPU>``,
   without build isolation (nothing is downloaded) into a separate directory that the later
   steps put first on ``PYTHONPATH``: the environment itself is not changed;
3. doctor: ``edgert doctor --json`` under that build;
4. tests: ``pytest device_tests`` (GPU offload and deadline cut, a quick GPU profile, the NVML
   energy counter against integrated power, the ONNX Runtime CUDA provider and TensorRT where
   installed; each skips itself, with its reason, where its hardware or package is missing);
5. report: one JSON (steps with their times, doctor's checks, every test's outcome, and the
   reports the tests wrote to ``device_tests/reports/``).

The CMake flags come from ``edgert.doctor.llama_build_command`` (one place for them).
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Dict, List, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from edgert.doctor import cuda_arch, llama_build_command  # noqa: E402

#: seconds per step; the sum stays within the 10 minutes the issue allows
BUDGET_S = {"detect": 15, "build": 330, "doctor": 30, "tests": 200, "report": 5}
TOTAL_LIMIT_S = 600


def _run(argv: List[str], timeout: float, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)


def detect() -> Dict[str, Any]:
    """The GPU through nvidia-smi, and the CUDA compiler."""
    out: Dict[str, Any] = {"gpu": None, "nvcc": shutil.which("nvcc") or (
        "/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").exists() else None)}
    if shutil.which("nvidia-smi"):
        done = _run(["nvidia-smi", "--query-gpu=name,compute_cap,driver_version,memory.total",
                     "--format=csv,noheader"], BUDGET_S["detect"])
        if done.returncode == 0 and done.stdout.strip():
            name, cap, driver, memory = [x.strip() for x in done.stdout.splitlines()[0].split(",")][:4]
            out["gpu"] = {"name": name, "compute_capability": cap, "driver": driver, "memory": memory,
                          "arch": cuda_arch(cap)}
    return out


def find_sdist(explicit: Optional[str]) -> Optional[Path]:
    for candidate in (explicit, os.environ.get("EDGERT_LLAMA_SDIST")):
        if candidate:
            return Path(candidate)
    found = sorted(glob.glob(str(HERE / "wheelhouse" / "llama_cpp_python-*.tar.gz")))
    return Path(found[-1]) if found else None


def llama_offloads(pythonpath: Optional[Path] = None) -> Optional[bool]:
    """Whether the llama-cpp-python that the tests will import can offload (None: not importable)."""
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = f"{pythonpath}{os.pathsep}{env.get('PYTHONPATH', '')}"
    code = "import llama_cpp; print(int(llama_cpp.llama_supports_gpu_offload()))"
    done = _run([sys.executable, "-c", code], 60, env)
    return bool(int(done.stdout.strip())) if done.returncode == 0 and done.stdout.strip() else None


def build_plan(machine: Dict[str, Any], sdist: Optional[Path]) -> Dict[str, Any]:
    """What the build step would do, and why it cannot where it cannot."""
    arch = (machine.get("gpu") or {}).get("arch")
    missing = [what for what, ok in (("nvcc (the CUDA compiler)", machine.get("nvcc")),
                                     ("scikit-build-core", importlib.util.find_spec("scikit_build_core")),
                                     ("cmake", shutil.which("cmake") or importlib.util.find_spec("cmake")),
                                     ("an NVIDIA GPU (nvidia-smi)", machine.get("gpu")),
                                     ("the llama-cpp-python sdist", sdist and sdist.exists()))
               if not ok]
    command = llama_build_command("cuda", arch)
    return {"arch": arch, "sdist": str(sdist) if sdist else None, "missing": missing,
            "cmake_args": command.split('"')[1], "equivalent": command}


def build(plan: Dict[str, Any], target: Path) -> Dict[str, Any]:
    env = dict(os.environ, CMAKE_ARGS=plan["cmake_args"], CMAKE_BUILD_PARALLEL_LEVEL=str(os.cpu_count() or 4))
    if plan.get("nvcc_dir"):
        env["PATH"] = f"{plan['nvcc_dir']}{os.pathsep}{env['PATH']}"
    argv = [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index",
            "--target", str(target), plan["sdist"]]
    done = _run(argv, BUDGET_S["build"], env)
    return {"returncode": done.returncode, "log_tail": (done.stdout + done.stderr)[-3000:]}


def junit_cases(path: Path) -> List[Dict[str, Any]]:
    if not path.exists():
        return []
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", None
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                message = (child.get("message") or "")[:500]
        cases.append({"name": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                      "seconds": float(case.get("time") or 0), "message": message})
    return cases


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="print the plan and its time budget, run nothing")
    parser.add_argument("--sdist", help="llama-cpp-python source archive to build with CUDA")
    parser.add_argument("--model", help="GGUF model for the GPU tests (default: the packaged SmolLM2, if installed)")
    parser.add_argument("--report", default=str(HERE / "reports" / "device-report.json"), help="where to write the JSON report")
    args = parser.parse_args(argv)
    sdist = find_sdist(args.sdist)
    started = time.monotonic()
    machine = detect()
    plan = build_plan(machine, sdist)
    if args.dry_run:
        print("device tests: plan (budget per step, seconds)")
        print(f"  1. detect   {BUDGET_S['detect']:>4}  nvidia-smi: {machine['gpu'] or 'no NVIDIA GPU here'}; "
              f"nvcc: {machine['nvcc'] or 'not found'}")
        print(f"  2. build    {BUDGET_S['build']:>4}  if llama-cpp-python cannot offload: pip install --no-build-isolation "
              f"--no-deps --no-index --target <tmp> {plan['sdist'] or '<sdist>'} with CMAKE_ARGS=\"{plan['cmake_args']}\"")
        if plan["missing"]:
            print(f"              missing here: {', '.join(plan['missing'])}")
        print(f"  3. doctor   {BUDGET_S['doctor']:>4}  edgert doctor --json")
        print(f"  4. tests    {BUDGET_S['tests']:>4}  pytest device_tests (model: {args.model or 'packaged SmolLM2'})")
        print(f"  5. report   {BUDGET_S['report']:>4}  {args.report}")
        print(f"  total      {sum(BUDGET_S.values()):>4}  (limit {TOTAL_LIMIT_S})")
        return 0

    steps: List[Dict[str, Any]] = [{"name": "detect", "seconds": round(time.monotonic() - started, 1), **machine}]
    build_dir = Path(tempfile.mkdtemp(prefix="edgert-llama-cuda-"))
    pythonpath: Optional[Path] = None
    t0 = time.monotonic()
    offloads = llama_offloads()
    if offloads:
        steps.append({"name": "build", "status": "skipped: the installed llama-cpp-python already offloads"})
    elif plan["missing"]:
        steps.append({"name": "build", "status": f"not possible: missing {', '.join(plan['missing'])}", **plan})
    else:
        if machine["nvcc"]:
            plan["nvcc_dir"] = str(Path(machine["nvcc"]).parent)
        try:
            result = build(plan, build_dir)
            ok = result["returncode"] == 0
            pythonpath = build_dir if ok else None
            steps.append({"name": "build", "status": "built" if ok else "failed", **plan, **result,
                          "offloads_after": llama_offloads(build_dir) if ok else None})
        except subprocess.TimeoutExpired:
            steps.append({"name": "build", "status": f"timed out after {BUDGET_S['build']} s", **plan})
    steps[-1]["seconds"] = round(time.monotonic() - t0, 1)

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if pythonpath:
        env["PYTHONPATH"] = f"{pythonpath}{os.pathsep}{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    if args.model:
        env["EDGERT_DEVICE_MODEL"] = str(Path(args.model).resolve())
    t0 = time.monotonic()
    doctor: Any = None
    try:
        done = _run([sys.executable, "-m", "edgert.cli.main", "doctor", "--json"], BUDGET_S["doctor"], env)
        doctor = json.loads(done.stdout) if done.stdout.strip().startswith("{") else {"stderr": done.stderr[-2000:]}
    except subprocess.TimeoutExpired:
        doctor = {"error": f"timed out after {BUDGET_S['doctor']} s"}
    steps.append({"name": "doctor", "seconds": round(time.monotonic() - t0, 1)})

    t0 = time.monotonic()
    junit = build_dir / "junit.xml"
    try:
        done = _run([sys.executable, "-m", "pytest", str(HERE), "-q", "-rs", "-p", "no:cacheprovider",
                     f"--junitxml={junit}"], BUDGET_S["tests"], env)
        steps.append({"name": "tests", "returncode": done.returncode, "log_tail": done.stdout[-3000:]})
    except subprocess.TimeoutExpired:
        steps.append({"name": "tests", "status": f"timed out after {BUDGET_S['tests']} s"})
    steps[-1]["seconds"] = round(time.monotonic() - t0, 1)
    cases = junit_cases(junit)
    reports = {}
    for path in sorted((HERE / "reports").glob("*.json")):
        if path.resolve() != Path(args.report).resolve():
            try:
                reports[path.name] = json.loads(path.read_text())
            except ValueError:
                reports[path.name] = path.read_text()[:2000]
    counts = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failed", "error", "skipped")}
    report = {"created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "seconds": round(time.monotonic() - started, 1), "machine": machine, "steps": steps,
              "doctor": doctor, "tests": {**counts, "cases": cases}, "reports": reports}
    Path(args.report).parent.mkdir(parents=True, exist_ok=True)
    Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    print(f"device tests: {counts['passed']} passed, {counts['failed'] + counts['error']} failed, "
          f"{counts['skipped']} skipped in {report['seconds']:.0f} s; report: {args.report}")
    shutil.rmtree(build_dir, ignore_errors=True)
    return 1 if counts["failed"] or counts["error"] else 0


if __name__ == "__main__":
    sys.exit(main())
