"""The GPU-free parts of the TensorRT runner: the engine check before loading, registration, tokenizer."""

import importlib.util
import sys

import pytest

from edgert.converters import tensorrt_convert as tc
from edgert.devices.cuda import CudaRuntime
from edgert.formats.tensorrt import EngineMismatchError
from edgert.runners import tensorrt as rt
from edgert.runners.hf_tokenizer import HfTokenizer

ORIN_JP61 = {"tensorrt": "10.3.0", "compute_capability": "8.7", "l4t": "36.4.0", "jetpack": "6.1",
             "platform": "linux-aarch64", "hardware_compatibility": "none"}
ORIN_JP512 = {"tensorrt": "8.5.2", "compute_capability": "8.7", "l4t": "35.4.1", "jetpack": "5.1.2",
              "platform": "linux-aarch64"}


# ------------------------------------------------------------------------- runner
def test_runner_refuses_a_mismatched_engine_before_touching_tensorrt(tmp_path, monkeypatch):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not read")

    def touched():
        raise AssertionError("TensorRT was imported")

    monkeypatch.setattr(rt, "_import_tensorrt", touched)
    monkeypatch.setattr(CudaRuntime, "load", classmethod(lambda cls: touched()))
    runner = rt.TensorRTRunner(engine, engine_key=ORIN_JP61, device_key=ORIN_JP512, n_ctx=256)
    with pytest.raises(EngineMismatchError, match="engine built with TensorRT 10.3.0 .* this device has TensorRT 8.5.2"):
        runner.load()
    assert not runner.loaded
    with pytest.raises(EngineMismatchError, match="no recorded compatibility key"):
        rt.TensorRTRunner(engine, device_key=ORIN_JP61).load()


def test_runner_is_registered_and_modules_import_without_tensorrt():
    assert importlib.util.find_spec("tensorrt") is None or pytest.skip("tensorrt is installed here")
    assert "tensorrt" not in sys.modules
    assert rt.Runner.registry["tensorrt"] is rt.TensorRTRunner
    assert tc.Converter.registry["tensorrt"] is tc.TensorRTConverter


def test_tokenizer_bytes_for_byte_level_and_sentencepiece_vocabularies(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers

    tok = tokenizers.Tokenizer(models.BPE(vocab={"H": 0, "i": 1, "Ġ": 2, "Ã": 3, "©": 4, "<|end|>": 5}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|end|>"])
    tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text('{"eos_token": "<|end|>", "chat_template": "{{ messages }}"}')
    hf = HfTokenizer(tmp_path)
    assert b"".join(hf.token_bytes(t) for t in (0, 1, 2, 3, 4)) == "Hi é".encode()
    assert hf.token_bytes(5) == b"" and hf.end_ids == {5} and hf.chat_template == "{{ messages }}"
