"""Hugging Face model -> ONNX, with ONNX Runtime quantization.

Decoder LLMs are exported by optimum with a KV cache (task ``text-generation-with-past``:
inputs ``input_ids, attention_mask, position_ids, past_key_values.N.key/value``, outputs
``logits, present.N.key/value``), which ``edgert.runners.onnxruntime`` runs. Encoders and
vision models are exported for the task their architecture names (what optimum's ONNX
exporter supports). Every quantization is written from the fp32 export, each into its own
subdirectory of the staging directory, next to the Hugging Face side files the runner
reads (tokenizer, configs, chat template).

Language models are gated on next-token distributions (``Converter.gate``, candidate =
the ONNX Runtime runner itself); other networks on their outputs against the torch model.

``export_onnx`` is the one optimum export (the TensorRT target starts from it too).
This file is over 400 lines because it is one target, like ``gguf_writer.py``: the export,
the quantization table with its writers, static calibration and both gates belong together.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgert.errors import ConversionError
from edgert.logs import active_route

from .base import LM_GATE_NAMES, Artifact, Converter, ConvertOptions, check_gate_values, tool_versions
from .quality import SAMPLE_TEXT, GateResult, RunnerLogits, Thresholds, TorchReference, compare_outputs
from .source import Source

LLM_TASK = "text-generation-with-past"
MODEL_FILE = "model.onnx"
EXTERNAL_DATA_FILE = "model.onnx_data"

#: protobuf cannot serialize a message of 2 GiB or more; above this, weights go to external data
EXTERNAL_DATA_ABOVE_BYTES = 2**31 - 2**26

#: Hugging Face files copied next to every artifact (read by the ONNX runner and by tooling)
SIDE_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "preprocessor_config.json",
)

#: packages whose versions are recorded with every artifact and gate result
TOOL_PACKAGES = ("optimum", "optimum-onnx", "onnx", "onnxruntime", "transformers", "torch")

#: MatMulNBits block sizes ONNX Runtime accepts (power of two, >= 16; contrib op spec)
NBITS_BLOCK_SIZES = (16, 32, 64, 128, 256)


@dataclass(frozen=True)
class OutputThresholds:
    """Gate limits for non-LLM networks (outputs compared with the torch model)."""

    max_abs_diff: float
    min_cosine: float


OUTPUT_GATE_NAMES = ("max_abs_diff", "min_cosine")


# ---------------------------------------------------------------- quantizations
@dataclass
class _Job:
    """What a quantization step gets: the fp32 export and where to write."""

    fp32: Path
    out: Path
    external: bool
    options: ConvertOptions
    source: Source
    llm: bool
    onnx_inputs: Sequence[str]


@dataclass(frozen=True)
class Quantization:
    name: str
    write: Callable[[_Job], Dict[str, Any]]  # writes job.out, returns options to record
    for_llm: bool
    bytes_per_param: float
    about: str
    gate: Optional[Thresholds]  # language-model gate limits (None: not for LLMs)
    output_gate: OutputThresholds  # limits of the output gate (encoders, vision models)
    blocked: bool = False  # weight-only blocks: the recorded name carries the block size (int4-block32)

    def label(self, block_size: int) -> str:
        """The name artifacts and variants are recorded under."""
        return f"{self.name}-block{block_size}" if self.blocked else self.name


def _save(model, path: Path, external: bool) -> None:
    import onnx

    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=EXTERNAL_DATA_FILE, size_threshold=1024)
    else:
        onnx.save_model(model, str(path))


def _write_fp32(job: _Job) -> Dict[str, Any]:
    import onnx

    has_external = (job.fp32.parent / EXTERNAL_DATA_FILE).exists()
    if has_external == job.external:
        shutil.copy2(job.fp32, job.out)
        if has_external:
            shutil.copy2(job.fp32.parent / EXTERNAL_DATA_FILE, job.out.parent / EXTERNAL_DATA_FILE)
    else:
        _save(onnx.load(str(job.fp32)), job.out, job.external)
    return {}


def _write_fp16(job: _Job) -> Dict[str, Any]:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(job.fp32)), keep_io_types=True, disable_shape_infer=job.external)
    _save(model, job.out, job.external)
    return {"keep_io_types": True}


def _mlp_down_projections(model_path: Path) -> List[str]:
    """MatMul nodes of the MLP output projections, whose inputs carry the activation outliers
    that per-tensor dynamic int8 cannot represent (SmolLM2: mean KLD 0.69 with them, 0.09 without)."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [n.name for n in graph.node
            if n.op_type == "MatMul" and "mlp" in n.name.lower() and any(k in n.name for k in MLP_DOWN_PROJECTIONS)]


#: node-name parts of MLP output projections (Llama/Qwen/Mistral/Gemma, GPT-2, GPT-NeoX, OPT/Phi, Mixtral)
MLP_DOWN_PROJECTIONS = ("down_proj", "c_proj", "dense_4h_to_h", "fc2", "w2")


def _write_int8_dynamic(job: _Job) -> Dict[str, Any]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    excluded = _mlp_down_projections(job.fp32) if job.llm else []
    quantize_dynamic(str(job.fp32), str(job.out), weight_type=QuantType.QInt8, per_channel=True,
                     nodes_to_exclude=excluded, use_external_data_format=job.external)
    return {"weight_type": "QInt8", "per_channel": True, "excluded_nodes": len(excluded)}


def _weight_only(job: _Job, bits: int) -> Dict[str, Any]:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    block = job.options.block_size
    config = DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=True, bits=bits)
    quantizer = MatMulNBitsQuantizer(onnx.load(str(job.fp32)), bits=bits, block_size=block, is_symmetric=True,
                                     algo_config=config)
    quantizer.process()
    quantizer.model.save_model_to_file(str(job.out), job.external)
    return {"bits": bits, "block_size": block, "symmetric": True, "op": "MatMulNBits"}


def _write_int4(job: _Job) -> Dict[str, Any]:
    return _weight_only(job, 4)


def _write_int8_weight(job: _Job) -> Dict[str, Any]:
    return _weight_only(job, 8)


def _write_int8_static(job: _Job) -> Dict[str, Any]:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    samples, origin = _calibration_samples(job)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(samples)

        def get_next(self):
            return next(self.items, None)

    prepared = job.out.parent / "prepared.onnx"
    quant_pre_process(str(job.fp32), str(prepared), skip_symbolic_shape=True,
                      save_as_external_data=job.external, all_tensors_to_one_file=True,
                      external_data_location="prepared.onnx_data")
    try:
        quantize_static(str(prepared), str(job.out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        use_external_data_format=job.external)
    finally:
        for leftover in job.out.parent.glob("prepared.onnx*"):
            leftover.unlink()
    return {"format": "QDQ", "activations": "QUInt8", "weights": "QInt8", "per_channel": True,
            "calibration": origin, "calibration_samples": len(samples)}


#: quantization name (--quant) -> how it is written and gated. LM gate limits measured with ONNX
#: Runtime on SmolLM2-135M, mean KLD / top-1 / ppl change: fp32 1e-11/1.000/0%, fp16 3e-5/0.996/0%,
#: int8-dynamic 0.089/0.813/+2.5%, int8-weight 0.0016/0.982/+1.0%, int4 0.379/0.676/+8.2%;
#: output-gate limits set from tiny BERT / ViT / ResNet exports.
QUANTIZATIONS: Dict[str, Quantization] = {
    q.name: q
    for q in (
        Quantization("fp32", _write_fp32, True, 4.0, "the export as is",
                     Thresholds(0.0005, 0.99, 0.5), OutputThresholds(1e-3, 0.99999)),
        Quantization("fp16", _write_fp16, True, 2.0, "float16 weights and compute, float32 inputs/outputs",
                     Thresholds(0.002, 0.98, 1.0), OutputThresholds(5e-2, 0.999)),
        Quantization("int8-dynamic", _write_int8_dynamic, True, 1.0, "int8 weights, activations quantized at run time",
                     Thresholds(0.15, 0.75, 5.0), OutputThresholds(1.0, 0.98)),
        Quantization("int8-weight", _write_int8_weight, True, 1.1, "8-bit weight-only blocks (MatMulNBits), float activations",
                     Thresholds(0.01, 0.96, 2.0), OutputThresholds(0.5, 0.99), blocked=True),
        Quantization("int4", _write_int4, True, 0.6, "4-bit weight-only blocks (MatMulNBits)",
                     Thresholds(0.60, 0.60, 15.0), OutputThresholds(1.0, 0.95), blocked=True),
        Quantization("int8-static", _write_int8_static, False, 1.0, "int8 QDQ, activations calibrated (non-LLM only)",
                     None, OutputThresholds(1.0, 0.98)),
    )
}
#: recorded name (int4-block32) -> its quantization, for every block size ONNX Runtime accepts
BY_LABEL: Dict[str, Quantization] = {q.label(b): q for q in QUANTIZATIONS.values() for b in NBITS_BLOCK_SIZES}


def output_thresholds(label: str, overrides: Optional[Dict[str, float]] = None) -> OutputThresholds:
    """The output-gate limits of a recorded quantization name, with ``--gate`` overrides."""
    values = dict(BY_LABEL[label].output_gate.__dict__)
    unknown = sorted(set(overrides or {}) - set(values))
    if unknown:  # convert() refuses these before any work; this is for direct callers of the gate
        raise ConversionError(f"output-gate threshold(s) {', '.join(unknown)}: expected {', '.join(OUTPUT_GATE_NAMES)}")
    values.update(overrides or {})
    return OutputThresholds(**values)


# ---------------------------------------------------------------- calibration
def _calibration_samples(job: _Job) -> Tuple[List[Dict[str, np.ndarray]], str]:
    """Feeds for static calibration: an .npz (arrays named like the graph inputs, one sample
    per leading index), a .txt (one text per line, for text models), or by default the text
    sample that ships with edgert (text models only)."""
    path = job.options.calibration
    if path is not None and Path(path).suffix == ".npz":
        data = np.load(path)
        missing = [n for n in job.onnx_inputs if n not in data.files]
        if missing:
            raise ConversionError(f"{path}: calibration arrays {missing} are missing; the model's inputs are {list(job.onnx_inputs)}")
        count = min(len(data[n]) for n in job.onnx_inputs)
        return [{n: data[n][i : i + 1] for n in job.onnx_inputs} for i in range(count)], str(path)
    if not (job.source.hf_dir / "tokenizer.json").exists() and not (job.source.hf_dir / "tokenizer_config.json").exists():
        raise ConversionError(
            "int8-static needs a calibration set for this model: pass --calibration FILE.npz "
            f"with arrays named {list(job.onnx_inputs)} (first axis = samples)"
        )
    from transformers import AutoTokenizer

    if path is not None:
        texts, origin = Path(path).read_text(encoding="utf-8").splitlines(), str(path)
    else:
        texts, origin = SAMPLE_TEXT.read_text(encoding="utf-8").split(". "), "edgert sample_en.txt"
    texts = [t.strip() for t in texts if t.strip()][:64]
    if not texts:
        raise ConversionError(f"{path}: no calibration text found (expected one text per line)")
    tokenizer = AutoTokenizer.from_pretrained(str(job.source.hf_dir))
    feeds = []
    for text in texts:
        encoded = tokenizer(text, return_tensors="np", truncation=True, max_length=128)
        feeds.append({n: encoded[n].astype(np.int64) for n in job.onnx_inputs if n in encoded})
    return feeds, origin


# ---------------------------------------------------------------- optimum
def _tasks_manager():
    try:
        import optimum.exporters.onnx.model_configs  # noqa: F401  (registers the ONNX configs)
        from optimum.exporters.tasks import TasksManager
    except ImportError:
        raise ConversionError("ONNX conversion unavailable: install edgert[convert] (optimum-onnx)") from None
    return TasksManager


def llm_model_types() -> List[str]:
    return sorted(_tasks_manager().get_supported_model_type_for_task(LLM_TASK, "onnx"))


def onnx_model_types() -> List[str]:
    manager = _tasks_manager()
    return sorted(t for t, exporters in manager._SUPPORTED_MODEL_TYPE.items() if "onnx" in exporters)


def _supported_tasks(model_type: str) -> List[str]:
    try:
        return list(_tasks_manager().get_supported_tasks_for_model_type(model_type, "onnx", library_name="transformers"))
    except KeyError:
        return []


def _quiet():
    """Keep tracing warnings and library log lines out of the caller's output (inside an
    ``edgert.logs`` route they go where the route sends them instead)."""
    stack = contextlib.ExitStack()
    if active_route() is not None:
        return stack
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    for name in ("optimum", "transformers", "torch.onnx", "root"):
        logger = logging.getLogger(None if name == "root" else name)
        previous = logger.level
        logger.setLevel(logging.ERROR)
        stack.callback(logger.setLevel, previous)
    return stack


def _progress(progress, label: str, done: int) -> None:
    if progress:
        progress(label, done, 1)


def export_onnx(source: Source, task: str, out_dir: Path, progress=None) -> Path:
    """Export ``source`` with optimum for ``task`` into ``out_dir`` (fp32, ``model.onnx``); the
    one optimum export, used by the ONNX and the TensorRT targets. Returns the model path."""
    try:
        from optimum.exporters.onnx import main_export
    except ImportError:
        raise ConversionError("ONNX conversion unavailable: install edgert[convert] (optimum-onnx)") from None
    shutil.rmtree(out_dir, ignore_errors=True)
    _progress(progress, "export ONNX", 0)
    try:
        with _quiet():
            main_export(str(source.hf_dir), str(out_dir), task=task, do_validation=False,
                        library_name="transformers", local_files_only=True)
    except (ValueError, KeyError, RuntimeError, OSError, NotImplementedError) as exc:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise ConversionError(f"optimum could not export {source.architecture} for {task}: {exc}") from exc
    if not (out_dir / MODEL_FILE).exists():
        raise ConversionError(f"optimum wrote no {MODEL_FILE} into {out_dir}")
    _progress(progress, "export ONNX", 1)
    return out_dir / MODEL_FILE


class OnnxConverter(Converter):
    """Exports Hugging Face models to ONNX and quantizes them with ONNX Runtime."""

    target = "onnx"
    external_data_above_bytes = EXTERNAL_DATA_ABOVE_BYTES

    def __init__(self) -> None:
        self._references: Dict[Tuple[str, str], Any] = {}

    def supported_quantizations(self) -> List[str]:
        return list(QUANTIZATIONS)

    def quantization_label(self, quantization: str, block_size: int) -> str:
        return QUANTIZATIONS[quantization].label(block_size)

    def gate_thresholds(self, quantization: str) -> Thresholds:
        gate = BY_LABEL[quantization].gate
        if gate is None:
            raise ConversionError(f"{quantization} has no language-model gate (it is for encoder and vision models)")
        return gate

    def gate_names(self, source: Optional[Source] = None) -> Tuple[str, ...]:
        if source is None:
            return LM_GATE_NAMES + OUTPUT_GATE_NAMES
        return LM_GATE_NAMES if self.is_language_model(source) else OUTPUT_GATE_NAMES

    def check_thresholds(self, thresholds: Dict[str, float], source: Optional[Source] = None) -> None:
        kind = "" if source is None else (
            f" ({source.architecture} is gated on {'next-token distributions' if self.is_language_model(source) else 'outputs'})")
        check_gate_values(thresholds, self.gate_names(source), kind)

    # ---------------------------------------------------------- what it takes
    def is_language_model(self, source: Source) -> bool:
        """Decoder LLM (gated on next-token distributions) or another network (gated on outputs)."""
        return source.architecture.endswith("ForCausalLM") and source.model_type in llm_model_types()

    def task(self, source: Source) -> str:
        """The optimum task the source is exported for."""
        if self.is_language_model(source):
            return LLM_TASK
        tasks = _supported_tasks(source.model_type)
        try:
            import transformers

            model_class = getattr(transformers, source.architecture, None)
            inferred = _tasks_manager()._infer_task_from_model_or_model_class(model_class=model_class) if model_class else None
        except (KeyError, ValueError, ImportError):
            inferred = None
        if inferred in tasks:
            return inferred
        return "feature-extraction" if "feature-extraction" in tasks else tasks[0]

    def supports(self, source: Source) -> Optional[str]:
        model_type = source.model_type
        if source.architecture.endswith("ForCausalLM"):
            if model_type in llm_model_types():
                return None
            return (f"ONNX export of decoder LLMs supports model types {', '.join(llm_model_types())}; "
                    f"found {model_type!r} ({source.architecture})")
        if _supported_tasks(model_type):
            return None
        return (f"ONNX export supports model types {', '.join(onnx_model_types())}; "
                f"found {model_type!r} ({source.architecture})")

    def estimated_output_bytes(self, source: Source, quantization: str) -> int:
        return int(QUANTIZATIONS[quantization].bytes_per_param * source.parameter_count)

    # ---------------------------------------------------------- conversion
    def convert(self, source: Source, options: ConvertOptions) -> List[Artifact]:
        reason = self.supports(source)
        if reason:
            raise ConversionError(reason)
        names = self.check_quantizations(options.quantizations)
        llm = self.is_language_model(source)
        for name in names:
            if llm and not QUANTIZATIONS[name].for_llm:
                raise ConversionError(
                    f"--quant {name} is for encoder and vision models (activations calibrated on a fixed set); "
                    f"{source.architecture} is a decoder LLM: use int8-dynamic or int4"
                )
        if any(QUANTIZATIONS[n].blocked for n in names) and options.block_size not in NBITS_BLOCK_SIZES:
            raise ConversionError(f"weight-only block size must be one of {NBITS_BLOCK_SIZES}, found {options.block_size}")
        if llm and not (source.hf_dir / "tokenizer.json").exists():
            raise ConversionError(f"{source.hf_dir} has no tokenizer.json; the ONNX runner needs a fast (tokenizers) tokenizer")

        work = Path(options.work_dir)
        work.mkdir(parents=True, exist_ok=True)
        task = self.task(source)
        export_dir = work / "onnx-export"
        started = time.perf_counter()
        export_onnx(source, task, export_dir, options.progress)
        export_s = time.perf_counter() - started
        fp32 = export_dir / MODEL_FILE
        fp32_bytes = self._size_on_disk(fp32)
        versions = tool_versions(TOOL_PACKAGES)
        inputs = self._onnx_inputs(fp32)
        artifacts = []
        try:
            for name in names:
                label = QUANTIZATIONS[name].label(options.block_size)
                out_dir = work / f"onnx-{label}"
                shutil.rmtree(out_dir, ignore_errors=True)
                out_dir.mkdir(parents=True)
                expected_bytes = fp32_bytes * QUANTIZATIONS[name].bytes_per_param / 4
                external = expected_bytes >= self.external_data_above_bytes
                job = _Job(fp32, out_dir / MODEL_FILE, external, options, source, llm, inputs)
                step = f"quantize ONNX {label}"
                _progress(options.progress, step, 0)
                t0 = time.perf_counter()
                try:
                    with _quiet():
                        recorded = QUANTIZATIONS[name].write(job)
                except ConversionError:
                    raise
                except Exception as exc:  # onnx / onnxruntime raise many types; name the step
                    raise ConversionError(f"ONNX {label} failed: {type(exc).__name__}: {exc}") from exc
                quantize_s = time.perf_counter() - t0
                _progress(options.progress, step, 1)
                self._copy_side_files(source, out_dir)
                artifacts.append(Artifact(
                    format="onnx",
                    quantization=label,
                    path=job.out,
                    files=sorted(p for p in out_dir.iterdir() if p.is_file() and p != job.out),
                    metadata={
                        "task": task,
                        "language_model": llm,
                        "external_data": job.external,
                        "quantization_options": recorded,
                        "export_s": round(export_s, 2),
                        "quantize_s": round(quantize_s, 2),
                        "tool_versions": versions,
                    },
                ))
        finally:
            shutil.rmtree(export_dir, ignore_errors=True)
        return artifacts

    @staticmethod
    def _size_on_disk(model: Path) -> int:
        return sum(p.stat().st_size for p in model.parent.glob(MODEL_FILE + "*"))

    @staticmethod
    def _onnx_inputs(model: Path) -> List[str]:
        import onnx

        graph = onnx.load(str(model), load_external_data=False).graph
        initializers = {i.name for i in graph.initializer}
        return [i.name for i in graph.input if i.name not in initializers]

    @staticmethod
    def _copy_side_files(source: Source, out_dir: Path) -> None:
        for name in SIDE_FILES:
            if (source.hf_dir / name).exists():
                shutil.copy2(source.hf_dir / name, out_dir / name)

    # ---------------------------------------------------------- the gate
    def candidate(self, artifact: Artifact, threads: Optional[int] = None) -> RunnerLogits:
        """The artifact run by edgert's ONNX Runtime runner: all positions in one pass, empty past."""
        return RunnerLogits("onnx", artifact.path, n_ctx=2048, n_threads=threads)

    def reference(self, source: Source):
        """The torch reference the pipeline passes to ``gate``: a ``quality.TorchReference`` for
        language models; None for other networks, whose gate loads its own torch model."""
        if not self.is_language_model(source):
            return None
        return TorchReference(source.hf_dir)

    def gate(self, source: Source, artifact: Artifact, reference, options: ConvertOptions):
        if self.is_language_model(source):
            result = super().gate(source, artifact, reference, options)
        else:
            result = self._output_gate(source, artifact, options)
        result.tool_versions = dict(artifact.metadata.get("tool_versions") or tool_versions(TOOL_PACKAGES))
        return result

    def _output_gate(self, source: Source, artifact: Artifact, options: ConvertOptions):
        """Compare the artifact's outputs with the torch model's on a few generated inputs."""
        limits = output_thresholds(artifact.quantization, options.thresholds)
        task = artifact.metadata.get("task") or self.task(source)
        model, onnx_config = self._torch_model(source, task)
        import onnxruntime as ort
        import torch

        session_options = ort.SessionOptions()
        session_options.log_severity_level = 3
        if options.threads:
            session_options.intra_op_num_threads = options.threads
        session = ort.InferenceSession(str(artifact.path), session_options, providers=["CPUExecutionProvider"])
        input_names = {i.name for i in session.get_inputs()}
        output_names = [o.name for o in session.get_outputs()]
        references, candidates = [], []
        torch.manual_seed(0)
        for batch, length in GATE_SHAPES:
            dummy = onnx_config.generate_dummy_inputs(framework="pt", batch_size=batch, sequence_length=length)
            with torch.no_grad():
                expected = model(**dummy)
            feeds = {k: v.numpy() for k, v in dummy.items() if k in input_names}
            got = dict(zip(output_names, session.run(output_names, feeds)))
            for name in output_names:
                if name in expected and expected[name] is not None:
                    references.append(expected[name].float().numpy())
                    candidates.append(got[name])
        if not references:
            raise ConversionError(f"no output of {artifact.path.name} ({output_names}) matches the torch model's outputs")
        metrics = compare_outputs(references, candidates)
        failures = []
        if metrics["max_abs_diff"] > limits.max_abs_diff:
            failures.append(f"max abs difference {metrics['max_abs_diff']:.4g} > {limits.max_abs_diff}")
        if metrics["min_cosine"] < limits.min_cosine:
            failures.append(f"cosine similarity {metrics['min_cosine']:.6f} < {limits.min_cosine}")
        return GateResult(not failures, metrics, dict(limits.__dict__), failures)

    def _torch_model(self, source: Source, task: str):
        key = (str(source.hf_dir), task)
        if key not in self._references:
            manager = _tasks_manager()
            with _quiet():
                model = manager.get_model_from_task(task, str(source.hf_dir), framework="pt", library_name="transformers")
            model.eval()
            constructor = manager.get_exporter_config_constructor("onnx", model=model, task=task, library_name="transformers")
            self._references[key] = (model, constructor(model.config))
        return self._references[key]


#: (batch, sequence length) of the generated inputs the output gate compares on
GATE_SHAPES = ((1, 8), (2, 16), (1, 32))
