"""The GPU-free parts of the TensorRT converter and the engine compatibility key, with fakes of tensorrt and NVML."""

import enum
import types
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from edgert.converters import tensorrt_convert as tc
from edgert.converters.base import ConvertOptions
from edgert.converters.source import Source
from edgert.errors import ConversionError
from edgert.errors import BackendUnavailableError, EdgertError
from edgert.devices.jetson import jetpack_for_l4t, read_l4t_release
from edgert.formats.tensorrt import EngineMismatchError, check_engine_compatible, compatibility_key, parse_version

FIXTURES = Path(__file__).parent.parent / "fixtures" / "sysfs"


# ------------------------------------------------------------------ precision plan
@pytest.mark.parametrize("version, quant, api, network, builder, qdq, fp16_onnx", [
    ("8.5.2.2", "fp32", "flags", ("EXPLICIT_BATCH",), (), False, False),
    ("8.5.2.2", "fp16", "flags", ("EXPLICIT_BATCH",), ("FP16",), False, False),
    ("8.5.2.2", "int8", "flags", ("EXPLICIT_BATCH",), ("INT8", "FP16"), True, False),
    ("10.3.0.30", "fp32", "flags", (), (), False, False),
    ("10.3.0.30", "fp16", "flags", (), ("FP16",), False, False),
    ("10.3.0.30", "int8", "flags", (), ("INT8", "FP16"), True, False),
    ("10.12.0.36", "fp32", "strongly_typed", ("STRONGLY_TYPED",), (), False, False),
    ("10.12.0.36", "fp16", "strongly_typed", ("STRONGLY_TYPED",), (), False, True),
    ("10.12.0.36", "int8", "strongly_typed", ("STRONGLY_TYPED",), (), True, False),
    ("11.0.0", "fp32", "strongly_typed", ("STRONGLY_TYPED",), (), False, False),
    ("11.0.0", "fp16", "strongly_typed", ("STRONGLY_TYPED",), (), False, True),
    ("11.0.0", "int8", "strongly_typed", ("STRONGLY_TYPED",), (), True, False),
])
def test_precision_plan(version, quant, api, network, builder, qdq, fp16_onnx):
    plan = tc.precision_plan(version, quant)
    assert (plan.api, plan.network_flags, plan.builder_flags) == (api, network, builder)
    assert (plan.requires_qdq, plan.requires_fp16_onnx) == (qdq, fp16_onnx)


def test_precision_plan_refuses_old_tensorrt_and_unknown_quantization():
    with pytest.raises(ConversionError, match="8.2.*too old"):
        tc.precision_plan("8.2.1", "fp16")
    with pytest.raises(ConversionError, match="expected one of fp32, fp16, int8"):
        tc.precision_plan("10.3.0", "int4")


# ------------------------------------------------------------ optimization profile
OPTIMUM_INPUTS = {
    "input_ids": ["batch_size", "sequence_length"],
    "attention_mask": ["batch_size", "past_sequence_length + 1"],
    "position_ids": ["batch_size", "sequence_length"],
    "past_key_values.0.key": ["batch_size", 3, "past_sequence_length", 64],
}


def test_profile_shapes_for_a_decoder_with_kv_cache():
    shapes = tc.profile_shapes(OPTIMUM_INPUTS, tc.ProfileOptions(max_batch=8, context=512))
    assert shapes["input_ids"] == ((1, 1), (1, 1), (8, 512))
    assert shapes["attention_mask"] == ((1, 1), (1, 257), (8, 512))
    assert shapes["past_key_values.0.key"] == ((1, 3, 0, 64), (1, 3, 256, 64), (8, 3, 511, 64))


def test_profile_shapes_encoder_and_static_inputs():
    shapes = tc.profile_shapes({"pixels": [1, 3, 224, 224], "ids": ["batch", "seq"]}, tc.ProfileOptions(4, 256))
    assert "pixels" not in shapes  # static: TensorRT makes the default profile
    assert shapes["ids"] == ((1, 1), (1, 128), (4, 256))


def test_profile_refuses_dimensions_it_cannot_size():
    with pytest.raises(ConversionError, match=r"input 'image' has a dynamic dimension 2 \('height'\)"):
        tc.profile_shapes({"image": ["batch", 3, "height", 224]}, tc.ProfileOptions())
    with pytest.raises(ConversionError, match="dimension 1 \\(None\\)"):
        tc.profile_shapes({"x": ["batch", None]}, tc.ProfileOptions())


# ---------------------------------------------------------------- ONNX preparation
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def tiny_onnx(path: Path, opset=17, qdq=None, weight_dtype=np.float32, external=False) -> Path:
    """input_ids-like float input [batch, seq, 4] @ W[4, 4]; optionally with Q/DQ on W."""
    weight = numpy_helper.from_array(np.arange(16, dtype=weight_dtype).reshape(4, 4) / 16, "W")
    nodes, inits = [], [weight]
    matmul_input = "W"
    if qdq is not None:
        zero_dtype, zero = qdq
        inits += [numpy_helper.from_array(np.array(0.1, np.float32), "scale"),
                  numpy_helper.from_array(np.array(zero, zero_dtype), "zero")]
        nodes += [helper.make_node("QuantizeLinear", ["W", "scale", "zero"], ["Wq"], name="q_w"),
                  helper.make_node("DequantizeLinear", ["Wq", "scale", "zero"], ["Wdq"], name="dq_w")]
        matmul_input = "Wdq"
    nodes.append(helper.make_node("MatMul", ["x", matmul_input], ["y"]))
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch_size", "sequence_length", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch_size", "sequence_length", 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path), save_as_external_data=external, all_tensors_to_one_file=True,
                    location="model.onnx.data", size_threshold=0)
    return path


def test_prepare_onnx_profile_and_weights(tmp_path):
    prepared = tc.prepare_onnx(tiny_onnx(tmp_path / "m.onnx"), tc.precision_plan("10.3", "fp16"), tc.ProfileOptions(8, 64))
    assert prepared.opset == 17 and prepared.weight_bytes == 64 and not prepared.converted_to_fp16
    assert prepared.profile["x"] == ((1, 1, 4), (1, 64, 4), (8, 64, 4))


def test_prepare_onnx_refuses_an_opset_the_parser_cannot_read(tmp_path):
    model = tiny_onnx(tmp_path / "m.onnx", opset=20)
    with pytest.raises(ConversionError, match="opset 20; TensorRT 8.5.2's parser reads opsets 9-17"):
        tc.prepare_onnx(model, tc.precision_plan("8.5.2", "fp16"), tc.ProfileOptions())
    assert tc.prepare_onnx(model, tc.precision_plan("10.3.0", "fp16"), tc.ProfileOptions()).opset == 20


def test_int8_needs_symmetric_qdq(tmp_path):
    plan = tc.precision_plan("10.3.0", "int8")
    with pytest.raises(ConversionError, match="int8 needs an ONNX model with QuantizeLinear/DequantizeLinear"):
        tc.prepare_onnx(tiny_onnx(tmp_path / "plain.onnx"), plan, tc.ProfileOptions())
    with pytest.raises(ConversionError, match="'q_w' has a UINT8 zero point.*symmetric int8"):
        tc.prepare_onnx(tiny_onnx(tmp_path / "u8.onnx", qdq=(np.uint8, 128)), plan, tc.ProfileOptions())
    prepared = tc.prepare_onnx(tiny_onnx(tmp_path / "s8.onnx", qdq=(np.int8, 0)), plan, tc.ProfileOptions())
    assert prepared.qdq_nodes == 2


def test_int8_refuses_quantized_bias(tmp_path):
    model = onnx.load(str(tiny_onnx(tmp_path / "m.onnx", qdq=(np.int8, 0))))
    model.graph.initializer.extend([numpy_helper.from_array(np.zeros(4, np.int32), "bias_q"),
                                    numpy_helper.from_array(np.array(0.01, np.float32), "bias_scale")])
    model.graph.node.insert(0, helper.make_node("DequantizeLinear", ["bias_q", "bias_scale"], ["bias"], name="dq_bias"))
    onnx.save(model, str(tmp_path / "bias.onnx"))
    with pytest.raises(ConversionError, match="'dq_bias' dequantizes an int32 tensor.*'QuantizeBias': False"):
        tc.prepare_onnx(tmp_path / "bias.onnx", tc.precision_plan("8.5.2", "int8"), tc.ProfileOptions())


def test_external_data_is_checked_and_counted(tmp_path):
    model = tiny_onnx(tmp_path / "ext" / "model.onnx", external=True)
    prepared = tc.prepare_onnx(model, tc.precision_plan("10.3", "fp32"), tc.ProfileOptions())
    assert prepared.external_data == ["model.onnx.data"] and prepared.weight_bytes == 64
    (tmp_path / "ext" / "model.onnx.data").unlink()
    with pytest.raises(ConversionError, match="external data files that are not beside it: model.onnx.data"):
        tc.prepare_onnx(model, tc.precision_plan("10.3", "fp32"), tc.ProfileOptions())


def test_models_over_engine_limits_are_refused(tmp_path):
    model = tiny_onnx(tmp_path / "m.onnx")
    with pytest.raises(ConversionError, match="fp32 engine needs about .* GiB of weights; this GPU has"):
        tc.prepare_onnx(model, tc.precision_plan("10.3", "fp32"), tc.ProfileOptions(), device_memory_bytes=64)
    big = tmp_path / "big.onnx"
    with open(big, "wb") as handle:
        handle.truncate(tc.PROTOBUF_LIMIT_BYTES)  # sparse file: no disk used
    with pytest.raises(ConversionError, match="over protobuf's 2 GiB limit: export it with external data"):
        tc.prepare_onnx(big, tc.precision_plan("10.3", "fp32"), tc.ProfileOptions())


def test_strongly_typed_fp16_gets_an_fp16_model(tmp_path):
    prepared = tc.prepare_onnx(tiny_onnx(tmp_path / "m.onnx"), tc.precision_plan("10.12", "fp16"),
                               tc.ProfileOptions(), work_dir=tmp_path / "work")
    assert prepared.converted_to_fp16 and prepared.path == tmp_path / "work" / "onnx-fp16" / "model.onnx"
    model = onnx.load(str(prepared.path))
    assert {t.data_type for t in model.graph.initializer} == {TensorProto.FLOAT16}
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT  # io types kept
    already = tc.prepare_onnx(prepared.path, tc.precision_plan("10.12", "fp16"), tc.ProfileOptions())
    assert not already.converted_to_fp16


# ------------------------------------------------------------- compatibility key
class _NvmlSpec:
    """The part of pynvml the key reads, with nvidia-ml-py's names."""

    class NVMLError(Exception):
        pass

    @staticmethod
    def nvmlInit(): ...
    @staticmethod
    def nvmlDeviceGetHandleByIndex(index): ...
    @staticmethod
    def nvmlDeviceGetCudaComputeCapability(handle): ...
    @staticmethod
    def nvmlDeviceGetName(handle): ...


def fake_nvml(capability=(8, 9), name="NVIDIA GeForce RTX 4090"):
    nvml = mock.create_autospec(_NvmlSpec)
    nvml.NVMLError = _NvmlSpec.NVMLError
    nvml.nvmlDeviceGetHandleByIndex.return_value = "gpu0"
    nvml.nvmlDeviceGetCudaComputeCapability.return_value = capability
    nvml.nvmlDeviceGetName.return_value = name
    return nvml


class _FakeCuda:
    """Stands in for the runner's CUDA runtime wrapper (cudaGetDeviceProperties)."""

    def __init__(self, major, minor, name="Orin"):
        self.answer = (major, minor, name)

    def device_capability(self, index):
        return self.answer


def test_key_on_a_jetson_tree_without_nvml_uses_the_cuda_runtime():
    nvml = fake_nvml()
    nvml.nvmlInit.side_effect = _NvmlSpec.NVMLError("driver not loaded")
    key = compatibility_key(tensorrt_version="10.3.0.30", root=FIXTURES / "jetson-orin-nano",
                               nvml=nvml, cuda=_FakeCuda(8, 7), machine="aarch64")
    assert key == {"tensorrt": "10.3.0.30", "compute_capability": "8.7", "gpu_name": "Orin", "l4t": "36.4.3",
                   "jetpack": "6.2", "platform": "linux-aarch64", "hardware_compatibility": "none",
                   "version_compatible": False}


def test_key_on_a_desktop_gpu_from_nvml(tmp_path):
    nvml = fake_nvml()
    key = compatibility_key(tensorrt_version="10.12.0.36", root=tmp_path, nvml=nvml, machine="x86_64")
    nvml.nvmlDeviceGetCudaComputeCapability.assert_called_once_with("gpu0")
    assert (key["compute_capability"], key["gpu_name"], key["l4t"], key["jetpack"]) == ("8.9", "NVIDIA GeForce RTX 4090", None, None)


def test_key_of_an_old_jetson_release_and_unknown_releases(tmp_path):
    assert read_l4t_release(FIXTURES / "jetson-nano-r32") == "32.7.1"
    assert jetpack_for_l4t("32.7.1") == "4.6.1"
    assert jetpack_for_l4t("35.4.1") == "5.1.2"
    assert jetpack_for_l4t("36.9.9") is None


# --------------------------------------------------------------- mismatch checks
ORIN_JP61 = {"tensorrt": "10.3.0", "compute_capability": "8.7", "l4t": "36.4.0", "jetpack": "6.1",
             "platform": "linux-aarch64", "hardware_compatibility": "none"}
ORIN_JP512 = {"tensorrt": "8.5.2", "compute_capability": "8.7", "l4t": "35.4.1", "jetpack": "5.1.2",
              "platform": "linux-aarch64"}
RTX_4090 = {"tensorrt": "10.3.0", "compute_capability": "8.9", "l4t": None, "jetpack": None, "platform": "linux-x86_64"}


def test_mismatched_tensorrt_version_names_both_sides():
    with pytest.raises(EngineMismatchError) as caught:
        check_engine_compatible(ORIN_JP61, ORIN_JP512)
    message = str(caught.value)
    assert message.startswith(
        "engine built with TensorRT 10.3.0 for compute capability 8.7 (JetPack 6.1); "
        "this device has TensorRT 8.5.2 and compute capability 8.7 (JetPack 5.1.2) (TensorRT version differs)"
    )
    assert "\n" not in message and isinstance(caught.value, EdgertError)


def test_mismatched_gpu_and_platform():
    with pytest.raises(EngineMismatchError, match=r"compute capability 8.7 \(JetPack 6.1\) on linux-aarch64; "
                       r"this device has TensorRT 10.3.0 and compute capability 8.9 \(not a Jetson\) on linux-x86_64 "
                       r"\(compute capability, Jetson, platform differ\)"):
        check_engine_compatible(ORIN_JP61, RTX_4090)


def test_compatible_engines_pass():
    check_engine_compatible(ORIN_JP61, dict(ORIN_JP61, tensorrt="10.3.0.30"))  # build number not recorded
    check_engine_compatible(dict(RTX_4090, hardware_compatibility="ampere_plus"),
                               dict(RTX_4090, compute_capability="8.6"))
    check_engine_compatible(dict(RTX_4090, tensorrt="10.3.0", version_compatible=True),
                               dict(RTX_4090, tensorrt="10.8.0"))


def test_exact_build_numbers_and_missing_keys():
    with pytest.raises(EngineMismatchError, match="TensorRT version differs"):
        check_engine_compatible(dict(RTX_4090, tensorrt="10.3.0.26"), dict(RTX_4090, tensorrt="10.3.0.30"))
    with pytest.raises(EngineMismatchError, match="no recorded compatibility key"):
        check_engine_compatible(None, RTX_4090)
    with pytest.raises(EngineMismatchError, match="no GPU differs"):
        check_engine_compatible(RTX_4090, dict(RTX_4090, compute_capability=None))


# ------------------------------------------------------- without GPU / TensorRT
def test_unavailable_reasons(tmp_path):
    none = lambda name: None  # noqa: E731
    reason = tc.tensorrt_unavailable_reason(tmp_path, which=none, find_spec=none)
    assert reason == ("TensorRT unavailable: no NVIDIA GPU found (nvidia-smi / /dev/nvidia0 absent) and the "
                      "tensorrt package is not installed: install edgert[gpu] on a machine with an NVIDIA GPU")
    gpu = lambda name: "/usr/bin/nvidia-smi"  # noqa: E731
    assert "tensorrt package is not installed" in tc.tensorrt_unavailable_reason(tmp_path, which=gpu, find_spec=none)
    jetson = tc.tensorrt_unavailable_reason(FIXTURES / "jetson-orin-nano", which=none, find_spec=lambda n: object())
    assert jetson is None


@pytest.fixture
def onnx_source(tmp_path):
    src = tmp_path / "src"
    tiny_onnx(src / "model.onnx")
    (src / "tokenizer.json").write_text("{}")
    return Source(src, "hf_dir", src, {"max_position_embeddings": 64})


def test_convert_without_tensorrt_fails_at_once_and_writes_nothing(onnx_source, tmp_path, monkeypatch):
    monkeypatch.setattr(tc.shutil, "which", lambda name: None)
    monkeypatch.setattr(tc.importlib.util, "find_spec", lambda name: None)
    work = tmp_path / "work"
    work.mkdir()
    converter = tc.TensorRTConverter(root=tmp_path / "empty-root")
    with pytest.raises(tc.TensorRTUnavailable, match="no NVIDIA GPU found .* install edgert\\[gpu\\]") as caught:
        converter.convert(onnx_source, ConvertOptions(["fp16", "int8"], work))
    assert isinstance(caught.value, BackendUnavailableError) and isinstance(caught.value, ConversionError)
    assert list(work.iterdir()) == []
    assert "no NVIDIA GPU" in converter.supports(onnx_source)


# ------------------------------------------------ builder code against a fake tensorrt
def fake_tensorrt(version: str):
    """A tensorrt module with the real names; enums and members differ per version like the real ones."""
    major_minor = parse_version(version)[:2]
    if major_minor >= (11, 0):
        network_flags = {"STRONGLY_TYPED": 0}  # EXPLICIT_BATCH gone in 11
        builder_flags = {"VERSION_COMPATIBLE": 0}  # FP16 / INT8 removed in 11
    elif major_minor >= (10, 0):
        network_flags = {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1}
        builder_flags = {"FP16": 0, "INT8": 2, "VERSION_COMPATIBLE": 11}
    else:
        network_flags = {"EXPLICIT_BATCH": 0, "EXPLICIT_PRECISION": 1}
        builder_flags = {"FP16": 0, "INT8": 2}

    class ILogger:
        Severity = enum.IntEnum("Severity", "INTERNAL_ERROR ERROR WARNING INFO VERBOSE")

        def __init__(self):
            pass

    class OnnxParser:
        def __init__(self, network, logger): ...
        def parse_from_file(self, model): ...
        def get_error(self, index): ...
        num_errors = 0

    class ITimingCache:
        def serialize(self): ...

    class IBuilderConfig:
        hardware_compatibility_level = None
        def set_flag(self, flag): ...
        def set_memory_pool_limit(self, pool, pool_size): ...
        def add_optimization_profile(self, profile): ...
        def create_timing_cache(self, serialized_timing_cache): ...
        def set_timing_cache(self, cache, ignore_mismatch): ...
        def get_timing_cache(self): ...

    class IOptimizationProfile:
        def set_shape(self, input, min, opt, max): ...

    class Builder:
        def __init__(self, logger): ...
        def create_network(self, flags=0): ...
        def create_builder_config(self): ...
        def create_optimization_profile(self): ...
        def build_serialized_network(self, network, config): ...

    builder = mock.create_autospec(Builder, instance=True)
    config = mock.create_autospec(IBuilderConfig, instance=True)
    profile = mock.create_autospec(IOptimizationProfile, instance=True)
    parser = mock.create_autospec(OnnxParser, instance=True)
    cache = mock.create_autospec(ITimingCache, instance=True)
    builder.create_builder_config.return_value = config
    builder.create_optimization_profile.return_value = profile
    builder.build_serialized_network.return_value = b"ENGINE"
    parser.parse_from_file.return_value = True
    config.create_timing_cache.return_value = cache
    config.get_timing_cache.return_value = cache
    cache.serialize.return_value = b"CACHE"
    trt = types.SimpleNamespace(
        __version__=version,
        ILogger=ILogger,
        Builder=mock.Mock(return_value=builder),
        OnnxParser=mock.Mock(return_value=parser),
        NetworkDefinitionCreationFlag=enum.IntEnum("NetworkDefinitionCreationFlag", network_flags),
        BuilderFlag=enum.IntEnum("BuilderFlag", builder_flags),
        MemoryPoolType=enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0}),
        HardwareCompatibilityLevel=enum.IntEnum("HardwareCompatibilityLevel",
                                                {"NONE": 0, "AMPERE_PLUS": 1, "SAME_COMPUTE_CAPABILITY": 2}),
    )
    return trt, builder, config, profile, parser


@pytest.mark.parametrize("version, quant, network_flags, builder_flags", [
    ("8.5.2.2", "fp16", 1 << 0, ["FP16"]),
    ("8.5.2.2", "int8", 1 << 0, ["INT8", "FP16"]),
    ("10.3.0.30", "fp16", 0, ["FP16"]),
    ("10.3.0.30", "fp32", 0, []),
    ("10.12.0.36", "fp16", 1 << 1, []),
    ("10.12.0.36", "int8", 1 << 1, []),
    ("11.0.0.11", "fp16", 1 << 0, []),
])
def test_builder_calls_the_api_of_each_version(tmp_path, version, quant, network_flags, builder_flags):
    trt, builder, config, profile, parser = fake_tensorrt(version)
    qdq = (np.int8, 0) if quant == "int8" else None
    model = tiny_onnx(tmp_path / "m.onnx", qdq=qdq)
    plan = tc.precision_plan(version, quant)
    prepared = tc.prepare_onnx(model, plan, tc.ProfileOptions(8, 64), work_dir=tmp_path / "work")
    cache = tmp_path / "timing.cache"
    engine = tc.build_engine(trt, prepared, plan, timing_cache=cache, workspace_bytes=1 << 30)
    assert engine == b"ENGINE"
    builder.create_network.assert_called_once_with(network_flags)
    parser.parse_from_file.assert_called_once_with(str(prepared.path))
    assert [c.args[0].name for c in config.set_flag.call_args_list] == builder_flags
    config.set_memory_pool_limit.assert_called_once_with(trt.MemoryPoolType.WORKSPACE, 1 << 30)
    profile.set_shape.assert_called_once_with("x", (1, 1, 4), (1, 64, 4), (8, 64, 4))
    config.add_optimization_profile.assert_called_once_with(profile)
    config.create_timing_cache.assert_called_once_with(b"")
    config.set_timing_cache.assert_called_once_with(config.create_timing_cache.return_value, ignore_mismatch=False)
    assert cache.read_bytes() == b"CACHE"
    tc.build_engine(trt, prepared, plan, timing_cache=cache)
    config.create_timing_cache.assert_called_with(b"CACHE")  # reused on the next build


def test_builder_reports_parser_and_build_failures(tmp_path):
    trt, builder, config, profile, parser = fake_tensorrt("10.3.0")
    plan = tc.precision_plan("10.3.0", "fp16")
    prepared = tc.prepare_onnx(tiny_onnx(tmp_path / "m.onnx"), plan, tc.ProfileOptions())
    parser.parse_from_file.return_value = False
    parser.num_errors = 1
    parser.get_error.return_value = "In node 0 (MatMul): unsupported"
    with pytest.raises(ConversionError, match="parser rejected m.onnx: In node 0 \\(MatMul\\): unsupported"):
        tc.build_engine(trt, prepared, plan)
    parser.parse_from_file.return_value = True
    builder.build_serialized_network.return_value = None
    with pytest.raises(ConversionError, match="could not build the fp16 engine"):
        tc.build_engine(trt, prepared, plan)


def test_convert_with_a_fake_tensorrt_writes_engines_and_records_the_key(onnx_source, tmp_path, monkeypatch):
    trt, *_ = fake_tensorrt("10.3.0.30")
    monkeypatch.setattr(tc, "tensorrt_unavailable_reason", lambda root=None: None)
    monkeypatch.setattr(tc, "_import_tensorrt", lambda: trt)
    monkeypatch.setattr(tc, "compatibility_key", lambda **kw: dict(ORIN_JP61, tensorrt=kw["tensorrt_version"]))
    monkeypatch.setattr(tc, "_device_memory_bytes", lambda: None)
    work = tmp_path / "work"
    work.mkdir()
    [artifact] = tc.TensorRTConverter().convert(onnx_source, ConvertOptions(["FP16"], work))
    assert artifact.path == work / "tensorrt-fp16" / "model.engine" and artifact.path.read_bytes() == b"ENGINE"
    assert artifact.files == [work / "tensorrt-fp16" / "tokenizer.json"]
    assert artifact.metadata["engine"]["tensorrt"] == "10.3.0.30"
    assert artifact.metadata["tensorrt_build"]["plan"]["builder_flags"] == ("FP16",)
    assert artifact.metadata["tensorrt_build"]["profile"]["x"] == [[1, 1, 4], [1, 64, 4], [8, 64, 4]]
    assert (work / tc.TIMING_CACHE_NAME).read_bytes() == b"CACHE"


def test_convert_refuses_int8_before_building_anything(onnx_source, tmp_path, monkeypatch):
    trt, builder, *_ = fake_tensorrt("10.3.0")
    monkeypatch.setattr(tc, "tensorrt_unavailable_reason", lambda root=None: None)
    monkeypatch.setattr(tc, "_import_tensorrt", lambda: trt)
    monkeypatch.setattr(tc, "compatibility_key", lambda **kw: dict(RTX_4090))
    monkeypatch.setattr(tc, "_device_memory_bytes", lambda: None)
    with pytest.raises(ConversionError, match="int8 needs an ONNX model with QuantizeLinear"):
        tc.TensorRTConverter().convert(onnx_source, ConvertOptions(["fp16", "int8"], tmp_path))
    builder.build_serialized_network.assert_not_called()
