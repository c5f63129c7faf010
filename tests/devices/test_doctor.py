"""``edgert doctor`` on each fake device tree (x86 laptop with RAPL, an NVIDIA desktop with a
faked NVML, Jetson Orin Nano, Raspberry Pi 5) and on this machine."""

import json
import types

import pytest
from click.testing import CliRunner
from device_fakes import SYSFS, fake_nvml, replying
from test_device_power_knob import ORIN_NANO_CONF, no_nvml

from edgert.cli.main import main
from edgert.devices.jetson import NVPMODEL_QUERY
from edgert.devices.raspberrypi import PMIC_READ_ADC
from edgert.doctor import ERROR, INFO, OK, WARN, Environment, cgroup_limits, diagnose, exit_code
from edgert.errors import BackendUnavailableError
from edgert.runners import onnxruntime as ort_runner
from edgert.runners.llama_cpp import LLAMA_SYMBOLS, check_symbols

PMIC_TEXT = (SYSFS / "raspberry-pi-5" / "vcgencmd_pmic_read_adc.txt").read_text()


def by_area(checks):
    return {c.area: c for c in checks}


def test_x86_laptop_with_rapl(fake_root):
    checks = by_area(diagnose(Environment(root=fake_root("x86-laptop"), nvml=no_nvml(), euid=1000)))
    assert checks["cpu"].status == OK
    assert "i7-1260P" in checks["cpu"].summary and checks["cpu"].details["cgroup"]["cpus"] is None
    assert checks["llama.cpp"].status == OK  # no GPU: a CPU build is what this machine needs
    assert checks["power:cpu"].status == OK and checks["power:cpu"].summary.startswith("measured by rapl:")
    assert checks["knob:cpu"].status == OK
    assert checks["nvidia"].status == INFO and "no NVIDIA GPU" in checks["nvidia"].summary
    assert checks["state"].details["cpu_governor"] == "powersave"
    assert "board" not in checks


def test_nvidia_desktop_with_a_cpu_only_llama_build_gets_the_cuda_rebuild_command(fake_root):
    root = fake_root("x86-laptop")
    (root / "dev").mkdir()
    (root / "dev" / "nvidia0").write_text("")
    nvml = fake_nvml(energy_mj=None, clock_reasons=0x4)  # no energy counter; power-capped
    checks = by_area(diagnose(Environment(root=root, nvml=nvml, euid=1000)))
    llama = checks["llama.cpp"]
    assert llama.status == WARN and "built for the CPU only" in llama.summary
    assert "-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=89" in llama.fix and "llama-cpp-python==" in llama.fix
    assert checks["nvidia"].status == OK and "RTX 4090 (compute 8.9, 24 GiB)" in checks["nvidia"].summary
    assert checks["power:nvidia-gpu"].summary == "measured by nvml:power_usage:gpu0"
    knob = checks["knob:nvidia-gpu"]
    assert knob.status == WARN and "needs root" in knob.summary and "150 W" in knob.summary
    as_root = by_area(diagnose(Environment(root=root, nvml=nvml, euid=0)))
    assert as_root["knob:nvidia-gpu"].status == OK
    assert checks["state"].status == WARN and "gpu0:sw_power_cap" in checks["state"].summary


def test_jetson_orin_nano(fake_root):
    root = fake_root("jetson-orin-nano")
    run = replying({NVPMODEL_QUERY: "NV Power Mode: 15W\n0\n"})
    checks = by_area(diagnose(Environment(root=root, nvml=no_nvml(), run=run, euid=1000)))
    board = checks["board"]
    assert board.summary.startswith("NVIDIA Jetson Orin Nano Developer Kit, L4T 36.4.3, JetPack 6.2, power mode 15W")
    assert "-DCMAKE_CUDA_ARCHITECTURES=87" in checks["llama.cpp"].fix
    assert checks["llama.cpp"].fix.startswith("export PATH=/usr/local/cuda/bin:$PATH; ")
    assert checks["nvidia"].status == INFO and "Jetson" in checks["nvidia"].summary
    assert checks["power:jetson"].status == OK and "VDD_IN" in checks["power:jetson"].summary
    assert checks["knob:jetson"].status == WARN and "nvpmodel.conf" in checks["knob:jetson"].summary
    assert "JetPack's TensorRT" in checks["tensorrt"].fix
    (root / "etc" / "nvpmodel.conf").write_text(ORIN_NANO_CONF)
    checks = by_area(diagnose(Environment(root=root, nvml=no_nvml(), run=run, euid=1000)))
    assert checks["knob:jetson"].status == WARN and "needs root" in checks["knob:jetson"].summary
    assert "MAXN_SUPER" in checks["knob:jetson"].summary
    assert checks["state"].details["power_mode"] == "0" and checks["state"].details["jetson_clocks"] is False


def test_raspberry_pi_5(fake_root):
    run = replying({PMIC_READ_ADC: PMIC_TEXT, ("vcgencmd", "get_throttled"): "throttled=0x0\n"})
    checks = by_area(diagnose(Environment(root=fake_root("raspberry-pi-5"), nvml=no_nvml(), run=run, euid=1000)))
    assert checks["board"].summary == "Raspberry Pi 5 Model B Rev 1.0"
    assert checks["power:raspberry-pi"].status == OK and "pmic" in checks["power:raspberry-pi"].summary
    assert checks["state"].details["board_throttle"] == []


def test_a_llama_cpp_python_without_a_symbol_edgert_uses_is_an_error():
    partial = types.SimpleNamespace(**{name: object() for name in LLAMA_SYMBOLS if name != "llama_memory_seq_rm"},
                                    __version__="0.3.99")
    with pytest.raises(BackendUnavailableError, match=r"llama-cpp-python 0\.3\.99 lacks .*llama_memory_seq_rm.*supports "
                                                      r"llama-cpp-python"):
        check_symbols(partial)

    def importer(name):
        if name == "llama_cpp":
            return partial
        return __import__(name)

    checks = diagnose(Environment(nvml=no_nvml(), import_module=importer))
    llama = by_area(checks)["llama.cpp"]
    assert llama.status == ERROR and "0.3.99" in llama.summary and llama.fix.startswith("pip install 'llama-cpp-python")
    assert exit_code(checks) == 1


def test_two_onnxruntime_wheels_in_one_environment_are_an_error():
    versions = {"onnxruntime": "1.22.0", "onnxruntime-gpu": "1.22.0", "llama-cpp-python": "0.3.36"}
    checks = diagnose(Environment(nvml=no_nvml(), version_of=versions.get))
    ort = by_area(checks)["onnxruntime"]
    assert ort.status == ERROR and "onnxruntime 1.22.0, onnxruntime-gpu 1.22.0" in ort.summary
    assert ort.fix == "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu"
    assert exit_code(checks) == 1


def test_cgroup_limits_v2_and_v1(fake_root):
    root = fake_root("x86-laptop")
    scope = root / "sys/fs/cgroup/user.slice/user-1000.slice/session-2.scope"
    (scope / "cpu.max").write_text("150000 100000\n")
    (scope / "memory.max").write_text(f"{8 * 2**30}\n")
    assert cgroup_limits(root) == {"cpus": 1.5, "memory_bytes": 8 * 2**30, "version": 2}
    cpu = by_area(diagnose(Environment(root=root, nvml=no_nvml())))["cpu"]
    assert cpu.status == WARN and "cgroup limit 1.5 CPUs" in cpu.summary and cpu.fix.endswith("--threads 1")
    (root / "proc/self/cgroup").write_text("4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n")
    v1 = root / "sys/fs/cgroup"
    (v1 / "cpu,cpuacct/docker/abc").mkdir(parents=True)
    (v1 / "cpu,cpuacct/docker/abc/cpu.cfs_quota_us").write_text("200000\n")
    (v1 / "cpu,cpuacct/docker/abc/cpu.cfs_period_us").write_text("100000\n")
    (v1 / "memory").mkdir()
    (v1 / "memory/memory.limit_in_bytes").write_text("9223372036854771712\n")  # no limit, at the hierarchy root
    assert cgroup_limits(root) == {"cpus": 2.0, "memory_bytes": None, "version": 1}


def test_doctor_on_this_machine_as_json_and_as_a_table():
    runner = CliRunner()
    result = runner.invoke(main, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    areas = [c["area"] for c in data["checks"]]
    assert areas[:6] == ["cpu", "llama.cpp", "onnxruntime", "onnxruntime-genai", "tensorrt", "nvidia"]
    assert data["ok"] is True and all(c["status"] in ("ok", "warn", "missing", "info") for c in data["checks"])
    llama = data["checks"][1]
    assert llama["details"]["version"] and llama["details"]["gpu_offload"] is False
    table = runner.invoke(main, ["doctor"])
    assert table.exit_code == 0 and "llama.cpp" in table.output and "onnxruntime" in table.output


def test_the_onnx_runner_refuses_two_onnxruntime_wheels(monkeypatch):
    monkeypatch.setattr(ort_runner, "installed_ort_wheels", lambda: {"onnxruntime": "1.22.0", "onnxruntime-gpu": "1.22.0"})
    with pytest.raises(BackendUnavailableError, match=r"2 ONNX Runtime wheels .* fix: pip uninstall -y onnxruntime "
                                                      r"onnxruntime-gpu && pip install onnxruntime-gpu"):
        ort_runner._ort()
    monkeypatch.undo()
    assert ort_runner._ort().__name__ == "onnxruntime"  # one wheel here: imports
