"""On an NVIDIA GPU / Jetson with TensorRT: build fp16 and int8 engines from a small ONNX model,
run them, compare with ONNX Runtime (max abs diff, cosine) and write a report."""

import json
import time
from pathlib import Path

import numpy as np
import pytest

REPORTS = Path(__file__).parent / "reports"
SHAPE = (3, 32, 32)
# fp16 and Q/DQ int8 against fp32 ONNX Runtime on a 3-layer CNN with unit-scale inputs
TOLERANCES = {"fp32": (1e-3, 0.9999), "fp16": (5e-2, 0.999), "int8": (0.5, 0.98)}


def small_cnn(path: Path, seed: int = 0) -> Path:
    """Conv-Relu-Conv-Relu-GlobalAveragePool-Gemm with a dynamic batch, random weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = lambda *s: numpy_helper.from_array((rng.standard_normal(s) / np.sqrt(np.prod(s[1:]))).astype(np.float32))  # noqa: E731
    inits = [w(16, 3, 3, 3), w(32, 16, 3, 3), w(10, 32)]
    for tensor, name in zip(inits, ("c1", "c2", "fc")):
        tensor.name = name
    nodes = [
        helper.make_node("Conv", ["x", "c1"], ["h1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h1"], ["r1"]),
        helper.make_node("Conv", ["r1", "c2"], ["h2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1),
    ]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch_size", *SHAPE])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch_size", 10])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def qdq_int8(src: Path, dst: Path, samples: np.ndarray) -> Path:
    """Static QDQ int8, symmetric (what TensorRT's explicit quantization reads)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter({"x": s[None]} for s in samples)

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False})
    return dst


def run_engine(engine_bytes: bytes, x: np.ndarray) -> np.ndarray:
    import tensorrt as trt

    from edgert.devices.cuda import CudaRuntime
    from edgert.runners.tensorrt import make_logger

    cuda = CudaRuntime.load()
    engine = trt.Runtime(make_logger(trt)).deserialize_cuda_engine(engine_bytes)
    context = engine.create_execution_context()
    out = np.empty((x.shape[0], 10), dtype=np.float32)
    stream = cuda.stream()
    buffers = [cuda.malloc(x.nbytes), cuda.malloc(out.nbytes)]
    try:
        context.set_input_shape("x", x.shape)
        context.set_tensor_address("x", buffers[0])
        context.set_tensor_address("y", buffers[1])
        cuda.to_device(buffers[0], x, stream)
        assert context.execute_async_v3(stream)
        cuda.to_host(out, buffers[1], stream)
        cuda.synchronize(stream)
    finally:
        for pointer in buffers:
            cuda.free(pointer)
        cuda.destroy_stream(stream)
    return out


@pytest.mark.gpu
def test_fp16_and_int8_engines_match_onnx_runtime(tmp_path):
    trt = pytest.importorskip("tensorrt")
    pytest.importorskip("onnx")
    import onnxruntime as ort

    from edgert.converters import tensorrt_convert as tc
    from edgert.converters.quality import compare_outputs

    rng = np.random.default_rng(1)
    calibration = rng.standard_normal((16, *SHAPE)).astype(np.float32)
    x = rng.standard_normal((4, *SHAPE)).astype(np.float32)
    fp32 = small_cnn(tmp_path / "cnn.onnx")
    sources = {"fp32": fp32, "fp16": fp32, "int8": qdq_int8(fp32, tmp_path / "cnn-int8.onnx", calibration)}
    reference = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    key = tc.compatibility_key(tensorrt_version=trt.__version__)
    tc.check_engine_compatible(key, key)
    report = {"tensorrt": trt.__version__, "device": key, "variants": {}}
    for quant, onnx_path in sources.items():
        plan = tc.precision_plan(trt.__version__, quant)
        prepared = tc.prepare_onnx(onnx_path, plan, tc.ProfileOptions(max_batch=8, context=16), work_dir=tmp_path / quant)
        started = time.perf_counter()
        engine = tc.build_engine(trt, prepared, plan, timing_cache=tmp_path / "timing.cache")
        build_s = time.perf_counter() - started
        out = run_engine(engine, x)
        metrics = compare_outputs([reference], [out])
        report["variants"][quant] = dict(metrics, api=plan.api, build_s=round(build_s, 2), engine_bytes=len(engine))
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / "tensorrt_device.json").write_text(json.dumps(report, indent=2))
    for quant, (max_abs, min_cos) in TOLERANCES.items():
        got = report["variants"][quant]
        assert got["max_abs_diff"] <= max_abs and got["min_cosine"] >= min_cos, (quant, got)
