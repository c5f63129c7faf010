"""The model a conversion starts from, resolved to a Hugging Face directory.

``resolve_source`` takes what the user gave (a Hugging Face directory, a pickle-only
checkpoint directory, or a GGUF file) and returns a ``Source`` whose ``hf_dir`` transformers
and optimum can load. Every weight file is read by edgert's defensive format readers first,
so a malformed file gets one clear error before any third-party loader maps it.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Dict, List

from edgert.errors import ConversionError
from edgert.formats.gguf import read_header
from edgert.formats.safetensors import read_safetensors_header
from edgert.logs import active_route
from edgert.progress import Progress

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@dataclass
class Source:
    """A model to convert, resolved to a Hugging Face directory (config.json + weights + tokenizer)."""

    path: Path  # what the user gave
    kind: str  # "hf_dir" | "gguf"
    hf_dir: Path  # the directory transformers / optimum load
    config: Dict[str, Any]
    trust_pickle: bool = False

    @property
    def architecture(self) -> str:
        archs = self.config.get("architectures") or [self.config.get("model_type", "unknown")]
        return str(archs[0])

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type", "unknown"))

    @property
    def name(self) -> str:
        stem = self.path.name
        return stem[: -len(".gguf")] if stem.endswith(".gguf") else stem

    @cached_property
    def parameter_count(self) -> int:
        """Parameters of the source from its safetensors headers (no tensor data is read)."""
        return sum(read_safetensors_header(path).parameter_count for path in sorted(self.hf_dir.glob("*.safetensors")))


def source_parameter_count(source: Source) -> int:
    """``source.parameter_count`` (kept as a function for the size and memory estimates)."""
    return source.parameter_count


def read_config(hf_dir: Path) -> Dict[str, Any]:
    path = hf_dir / "config.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConversionError(f"{hf_dir}: not a Hugging Face model directory (config.json is missing)") from None
    except json.JSONDecodeError as exc:
        raise ConversionError(f"{path}: not valid JSON ({exc.msg})") from None


def resolve_source(path: Path, work_dir: Path, trust_pickle: bool = False, progress: Progress = None) -> Source:
    """A Hugging Face directory as is, or a GGUF file dequantized into one (in work_dir)."""
    path = Path(path)
    if not path.exists():
        raise ConversionError(f"source not found: {path}")
    if path.is_file() and path.suffix == ".gguf":
        hf_dir = import_gguf(path, work_dir / "source-hf", progress)
        return Source(path, "gguf", hf_dir, read_config(hf_dir), trust_pickle)
    if path.is_file():
        raise ConversionError(f"{path}: expected a Hugging Face model directory or a .gguf file, found a {path.suffix or 'plain'} file")
    config = read_config(path)
    weights = sorted(p.name for p in path.iterdir() if p.suffix == ".safetensors")
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if not weights and pickles and not trust_pickle:
        raise ConversionError(
            f"{path} has only pickle checkpoints ({', '.join(pickles)}), which can run code when loaded; "
            "pass --trust-pickle to load them with torch.load(weights_only=True)"
        )
    if not weights and not pickles:
        raise ConversionError(f"{path}: no weights found (expected *.safetensors)")
    for name in weights:
        read_safetensors_header(path / name)  # a malformed file gets edgert's own clear error first
    if not weights:
        return Source(path, "hf_dir", _pickles_to_safetensors(path, pickles, work_dir / "source-hf"), config, trust_pickle)
    return Source(path, "hf_dir", path, config, trust_pickle)


def _pickles_to_safetensors(path: Path, pickles: List[str], out_dir: Path) -> Path:
    """Copy a trusted pickle checkpoint into a safetensors directory, loading tensors only."""
    import torch
    from safetensors.torch import save_file

    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    state: Dict[str, Any] = {}
    for name in pickles:
        try:
            loaded = torch.load(path / name, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ... for refused content
            raise ConversionError(f"{path / name}: refused by torch.load(weights_only=True): {exc}") from None
        if not isinstance(loaded, dict):
            raise ConversionError(f"{path / name}: expected a state dict of tensors, found {type(loaded).__name__}")
        state.update(loaded)
    # safetensors refuses shared storage; tied weights are written once each
    save_file({k: v.contiguous().clone() for k, v in state.items()}, str(out_dir / "model.safetensors"))
    for item in path.iterdir():
        if item.is_file() and item.suffix not in PICKLE_SUFFIXES:
            shutil.copy2(item, out_dir / item.name)
    return out_dir


def quiet_transformers() -> None:
    """transformers and huggingface_hub print progress bars and notices to stderr; edgert
    reports progress itself (the library never prints). Inside an ``edgert.logs`` route their
    warnings go where the route sends them, and their bars appear only when it is verbose."""
    route = active_route()
    if route is None or not route.verbose:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    from transformers.utils import logging as hf_logging

    if route is None:
        hf_logging.set_verbosity_error()
    else:
        hf_logging.set_verbosity_warning()
    if route is not None and route.verbose:
        hf_logging.enable_progress_bar()
    else:
        hf_logging.disable_progress_bar()


def import_gguf(path: Path, out_dir: Path, progress: Progress = None) -> Path:
    """Dequantize a GGUF file into a Hugging Face directory with transformers (fp32)."""
    read_header(path)  # a malformed file gets edgert's own clear error first
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise ConversionError("GGUF import unavailable: install edgert[convert]") from None
    quiet_transformers()
    if progress:
        progress("import GGUF (dequantize)", 0, 1)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    except (ValueError, KeyError, NotImplementedError) as exc:
        raise ConversionError(f"transformers cannot import {path.name}: {exc}") from None
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    # the slow tokenizer "vocab file" written for GGUF-loaded tokenizers is a copy of the GGUF itself
    vocab = tmp / "tokenizer.model"
    if vocab.exists() and (tmp / "tokenizer.json").exists() and vocab.read_bytes()[:4] == b"GGUF":
        vocab.unlink()
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    if progress:
        progress("import GGUF (dequantize)", 1, 1)
    return out_dir
