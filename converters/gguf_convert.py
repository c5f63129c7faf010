"""GGUF target: edgert's writer for F32/F16/BF16, then llama.cpp's own quantizer.

Quantization goes through ``llama_model_quantize`` (llama.cpp's C API, as bound by
llama-cpp-python), the same code as the ``llama-quantize`` tool. An importance matrix
can be passed as llama.cpp's GGUF imatrix file (``*.in_sum2`` / ``*.counts`` tensors) or
computed here from the shipped text sample (``--imatrix auto``).
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from edgert.errors import ConversionError
from edgert.formats.gguf import read_header
from edgert.runners.llama_cpp import _llama_cpp

from .base import Artifact, Converter, ConvertOptions, tool_versions
from .gguf_writer import ARCHITECTURES, QUANTIZATIONS, supported_architectures, write_gguf
from .quality import RunnerLogits, Thresholds, TorchReference
from .source import Source

#: packages whose versions are recorded with every GGUF artifact
TOOL_PACKAGES = ("gguf", "llama-cpp-python", "transformers", "torch", "safetensors")


def quantize_gguf(source: Path, out: Path, quantization: str, threads: Optional[int] = None,
                  imatrix: Optional[Dict[str, np.ndarray]] = None) -> Path:
    """Quantize a float GGUF with llama.cpp's quantizer (written to a temp name, then renamed)."""
    lib = _llama_cpp()
    params = lib.llama_model_quantize_default_params()
    params.ftype = QUANTIZATIONS[quantization].ftype
    params.nthread = threads or 0
    keep = []
    if imatrix:
        entries = (lib.llama_model_imatrix_data * (len(imatrix) + 1))()
        for i, (name, values) in enumerate(sorted(imatrix.items())):
            array = np.ascontiguousarray(values, dtype=np.float32)
            keep.append(array)
            entries[i].name = name.encode()
            entries[i].data = array.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            entries[i].size = array.size
        params.imatrix = ctypes.cast(entries, ctypes.POINTER(lib.llama_model_imatrix_data))
        keep.append(entries)
    tmp = out.with_name(out.name + ".partial")
    code = lib.llama_model_quantize(str(source).encode(), str(tmp).encode(), ctypes.byref(params))
    if code != 0 or not tmp.exists():
        tmp.unlink(missing_ok=True)
        raise ConversionError(f"llama.cpp's quantizer failed for {quantization} (code {code})")
    tmp.replace(out)
    return out


def read_imatrix(path: Path) -> Dict[str, np.ndarray]:
    """llama.cpp's GGUF importance matrix: mean squared activation per input column."""
    try:
        from gguf import GGUFReader
        reader = GGUFReader(str(path))
    except (ValueError, OSError) as exc:
        raise ConversionError(f"{path}: not a GGUF importance matrix ({exc})") from None
    sums, counts = {}, {}
    for tensor in reader.tensors:
        if tensor.name.endswith(".in_sum2"):
            sums[tensor.name[: -len(".in_sum2")]] = np.asarray(tensor.data, dtype=np.float32)
        elif tensor.name.endswith(".counts"):
            counts[tensor.name[: -len(".counts")]] = np.asarray(tensor.data, dtype=np.float32)
    if not sums:
        raise ConversionError(f"{path}: no *.in_sum2 tensors; expected an imatrix written by llama-imatrix")
    out = {}
    for name, values in sums.items():
        count = counts.get(name)
        n = float(count.ravel()[0]) if count is not None and count.size else 1.0
        out[name] = values.ravel() / max(n, 1.0)
    return out


def compute_imatrix(hf_dir: Path, gguf_path: Path) -> Dict[str, np.ndarray]:
    """Mean squared input activation of every linear layer over the shipped text sample,
    keyed by GGUF tensor name (what llama-imatrix computes, done with the torch model)."""
    import torch
    import gguf

    reference = TorchReference(hf_dir)
    config = reference.model.config
    arch = getattr(gguf.MODEL_ARCH, ARCHITECTURES[config.architectures[0]].gguf_arch)
    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    sums: Dict[str, torch.Tensor] = {}
    counts: Dict[str, int] = {}
    hooks = []
    for module_name, module in reference.model.named_modules():
        if isinstance(module, torch.nn.Linear):
            gguf_name = names.get_name(module_name + ".weight", try_suffixes=(".weight",))
            if gguf_name is None:
                continue

            def hook(_m, inputs, _out, key=gguf_name):
                x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).float()
                sums[key] = sums.get(key, 0) + (x * x).sum(0)
                counts[key] = counts.get(key, 0) + x.shape[0]

            hooks.append(module.register_forward_hook(hook))
    try:
        for ids in reference.windows():
            reference.logits(ids)
    finally:
        for h in hooks:
            h.remove()
    if getattr(config, "tie_word_embeddings", False) and "token_embd.weight" not in sums and "output.weight" in sums:
        sums["token_embd.weight"] = sums.pop("output.weight")
        counts["token_embd.weight"] = counts.pop("output.weight")
    return {name: (sums[name] / counts[name]).numpy() for name in sums}


class GGUFConverter(Converter):
    target = "gguf"

    def supported_quantizations(self) -> List[str]:
        return list(QUANTIZATIONS)

    def gate_thresholds(self, quantization: str) -> Thresholds:
        return QUANTIZATIONS[quantization].gate

    def supports(self, source: Source) -> Optional[str]:
        if source.architecture not in ARCHITECTURES:
            return (f"architecture {source.architecture} is not supported for GGUF; "
                    f"supported: {', '.join(supported_architectures())}")
        if not (source.hf_dir / "tokenizer.json").exists():
            return f"{source.hf_dir}: tokenizer.json is missing; edgert needs a fast (tokenizers) tokenizer"
        return None

    def estimated_output_bytes(self, source: Source, quantization: str) -> int:
        return int(source.parameter_count * QUANTIZATIONS[quantization].bits_per_weight / 8)

    @staticmethod
    def _from_original_gguf(source: Source) -> Tuple[str, Dict[str, object]]:
        """Model name and tokenizer settings of a GGUF source, which transformers' import
        does not keep (pre-tokenizer, add_bos, special ids); read from one header."""
        if source.kind != "gguf":
            return source.name, {}
        header = read_header(source.path)
        info = header.tokenizer_info()
        keys = ("add_bos_token", "add_eos_token", "pre", "bos_token_id", "eos_token_id")
        overrides: Dict[str, object] = {k: info[k] for k in keys if info.get(k) is not None}
        return str(header.get("general.name") or source.name), overrides

    def convert(self, source: Source, options: ConvertOptions) -> List[Artifact]:
        quants = self.check_quantizations(options.quantizations)
        name, overrides = self._from_original_gguf(source)
        artifacts: List[Artifact] = []
        float_base: Optional[Path] = None
        imatrix = None
        for quant in quants:
            out = options.work_dir / f"{quant.lower()}.gguf"
            meta = {"tool_versions": tool_versions(TOOL_PACKAGES), "writer": "edgert gguf_writer"}
            if QUANTIZATIONS[quant].file_type:
                write_gguf(source.hf_dir, out, quant, tokenizer_overrides=overrides, name=name, progress=options.progress)
            else:
                if float_base is None:
                    float_base = options.work_dir / "base-f16.gguf"
                    write_gguf(source.hf_dir, float_base, "F16", tokenizer_overrides=overrides, name=name,
                               progress=options.progress)
                if options.imatrix is not None and imatrix is None:
                    imatrix = (compute_imatrix(source.hf_dir, float_base) if str(options.imatrix) == "auto"
                               else read_imatrix(Path(options.imatrix)))
                if options.progress:
                    options.progress(f"quantize {quant}", 0, 1)
                quantize_gguf(float_base, out, quant, options.threads, imatrix)
                if options.progress:
                    options.progress(f"quantize {quant}", 1, 1)
                meta.update(quantizer="llama_model_quantize", imatrix=str(options.imatrix) if options.imatrix else None)
            artifacts.append(Artifact(format="gguf", quantization=quant, path=out, metadata=meta))
        if float_base is not None and float_base.exists():
            float_base.unlink()
        return artifacts

    def candidate(self, artifact: Artifact, threads: Optional[int] = None) -> RunnerLogits:
        return RunnerLogits("gguf", artifact.path, n_ctx=1024, n_threads=threads, n_seq_max=1)
