"""On an NVIDIA GPU: NVML's energy counter against its integrated power draw, the device state
(clocks, temperature, throttle reasons) read through NVML, and ONNX Runtime's CUDA provider
against its CPU provider. Each writes its figures to device_tests/reports/."""

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgert.devices import EnergyMeter, NvmlEnergySensor, NvmlPowerSensor, nvidia_gpus
from edgert.devices.state import StateReader
from edgert.errors import EdgertError
from edgert.runners.llama_cpp import LlamaCppRunner, gpu_offload_supported
from edgert.runners.types import SamplingParams

REPORTS = Path(__file__).parent / "reports"


def _gpu0():
    try:
        gpus = nvidia_gpus()
    except EdgertError as exc:
        pytest.skip(f"NVML unavailable: {exc}")
    if not gpus:
        pytest.skip("NVML lists no GPU")
    return gpus[0]


def _busy(model: Path, seconds: float) -> threading.Thread:
    """Keep the GPU busy generating for about ``seconds`` (needs a CUDA build of llama-cpp-python)."""

    def work():
        with LlamaCppRunner(model, n_ctx=2048) as runner:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                runner.generate("Write a long story about a robot.", SamplingParams(max_tokens=64))

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


@pytest.mark.gpu
def test_nvml_energy_counter_matches_integrated_power(device_model):
    gpu = _gpu0()
    try:
        counter = NvmlEnergySensor(gpu.nvml, gpu.handle, gpu.index)
        power = NvmlPowerSensor(gpu.nvml, gpu.handle, gpu.index)
    except EdgertError as exc:
        pytest.skip(f"GPU 0 lacks a sensor: {exc}")
    busy = _busy(device_model, 4.0) if gpu_offload_supported() else None
    time.sleep(0.5)
    with EnergyMeter(counter, interval_s=0.05) as by_counter, EnergyMeter(power, interval_s=0.02) as by_power:
        time.sleep(3.0)
    if busy is not None:
        busy.join()
    a, b = by_counter.result, by_power.result
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / "nvml_energy.json").write_text(json.dumps({
        "counter_j": a.energy_j, "integrated_power_j": b.energy_j, "seconds": a.duration_s,
        "avg_power_w": a.avg_power_w, "busy": busy is not None}, indent=2))
    # NVML's power reading is averaged over about a second on recent boards: within 15 %
    assert a.energy_j == pytest.approx(b.energy_j, rel=0.15)


@pytest.mark.gpu
def test_device_state_reads_the_gpu_clocks_and_throttle_reasons():
    _gpu0()
    state = StateReader().read()
    (gpu, *_) = state.gpus
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / "device_state.json").write_text(json.dumps(state.to_dict(), indent=2))
    assert gpu["sm_clock_mhz"] and gpu["sm_clock_mhz"] > 0, gpu
    assert gpu["temperature_c"] is not None and 0 < gpu["temperature_c"] < 110, gpu
    assert isinstance(gpu["clock_reasons"], list), gpu


@pytest.mark.gpu
def test_onnxruntime_cuda_provider_matches_the_cpu_provider(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip(f"no CUDA provider in this onnxruntime ({', '.join(ort.get_available_providers())})")
    from test_tensorrt_device import SHAPE, small_cnn

    model = small_cnn(tmp_path / "cnn.onnx")
    x = np.random.default_rng(1).standard_normal((4, *SHAPE)).astype(np.float32)
    cpu = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    session = ort.InferenceSession(str(model), providers=["CUDAExecutionProvider"])
    assert session.get_providers()[0] == "CUDAExecutionProvider"
    cuda = session.run(None, {"x": x})[0]
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / "ort_cuda.json").write_text(json.dumps({"max_abs_diff": float(np.abs(cpu - cuda).max())}, indent=2))
    assert np.allclose(cpu, cuda, atol=1e-3)
