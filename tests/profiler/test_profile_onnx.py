"""`edgert profile --quick` of an ONNX variant: costs come from the export's config.json."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgert.bundle import Bundle, Variant, pack
from edgert.cli.main import main
from edgert.profiler.profile import DeviceProfile

pytestmark = pytest.mark.slow


def _entry(root: Path, path: Path) -> dict:
    data = path.read_bytes()
    return {"file": path.relative_to(root).as_posix(), "sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)}


@pytest.fixture(scope="module")
def onnx_bundle(smollm2_path, smollm2_onnx_dir, tmp_path_factory) -> Path:
    """The packed GGUF plus the int8-dynamic ONNX export with its side files."""
    artifact = next(a for a in json.loads((smollm2_onnx_dir / "artifacts.json").read_text())
                    if a["quantization"] == "int8-dynamic")
    root = tmp_path_factory.mktemp("onnx-profile") / "bundle"
    bundle = pack([smollm2_path], root, model_name="smollm2")
    folder = root / "onnx-int8"
    shutil.copytree(Path(artifact["path"]).parent, folder)
    main_file = folder / Path(artifact["path"]).name
    files = [_entry(root, p) for p in sorted(folder.iterdir()) if p.is_file() and p != main_file]
    main_entry = _entry(root, main_file)
    bundle.manifest.variants.append(Variant(
        name="smollm2-onnx-int8", format="onnx", quantization="int8-dynamic", file=main_entry["file"],
        sha256=main_entry["sha256"], size_bytes=main_entry["size_bytes"], files=files))
    bundle.save_manifest()
    Bundle.open(root).verify()
    return root


def test_an_onnx_variant_profiles_with_quick(onnx_bundle, tmp_path):
    out = tmp_path / "cpu.json"
    result = CliRunner().invoke(main, ["profile", "--bundle", str(onnx_bundle), "--variant", "smollm2-onnx-int8",
                                       "--quick", "--out", str(out), "--threads", "2", "--no-plot"])
    assert result.exit_code == 0, result.output
    profile = DeviceProfile.load(out)
    variant = profile.variant("smollm2-onnx-int8")
    assert variant.costs.n_layer == 30 and len(variant.samples["decode"]) == 48
    assert profile.predict_decode_step_ms("smollm2-onnx-int8", 1000) > profile.predict_decode_step_ms("smollm2-onnx-int8", 10)
