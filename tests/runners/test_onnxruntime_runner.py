"""The ONNX Runtime runner on SmolLM2-135M-Instruct exported to ONNX (fp32, with KV cache)."""

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgert.errors import ModelFileError
from edgert.runners.types import CancelToken, Deadline, SamplingParams
from edgert.runners.base import Runner
from edgert.runners.onnxruntime import OnnxRuntimeRunner

pytestmark = pytest.mark.slow

STORY = "Write a very long story about a robot that explores the ocean, with many chapters."


@pytest.fixture(scope="session")
def onnx_fp32(smollm2_onnx_dir) -> Path:
    return smollm2_onnx_dir / "onnx-fp32" / "model.onnx"


@pytest.fixture(scope="module")
def runner(onnx_fp32):
    with OnnxRuntimeRunner(onnx_fp32, n_ctx=1024, n_threads=2) as r:
        yield r


def test_registered_for_the_onnx_format():
    assert Runner.registry["onnx"] is OnnxRuntimeRunner


def test_runner_module_does_not_import_torch_or_transformers():
    import subprocess
    import sys

    code = ("import sys, edgert.runners.onnxruntime as m; "
            "print(sorted(n for n in ('torch', 'transformers', 'optimum') if n in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_greedy_tokens_match_torch_generate(runner, smollm2_hf):
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    prompt = "What is the capital of France? Answer in one sentence."
    result = runner.generate(prompt, SamplingParams(max_tokens=24))
    ids = runner.tokenize(runner.format_prompt(prompt))
    model = AutoModelForCausalLM.from_pretrained(str(smollm2_hf), dtype=torch.float32)
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=24, do_sample=False, pad_token_id=2)
    expected = out[0, len(ids):].tolist()
    if expected and expected[-1] == 2:
        expected = expected[:-1]
    assert result.token_ids == expected
    assert "Paris" in result.text


def test_chat_template_and_eos_from_the_tokenizer_files(runner):
    text = runner.format_prompt("Hello there", system="Be brief.")
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n"
    )
    assert runner.tokenize("<|im_start|>user")[0] == 1
    assert runner.tokenize("<|im_start|>user")[:2] != [1, 1]
    result = runner.generate("Reply with one word: hello", SamplingParams(max_tokens=64))
    assert result.finish_reason == "eos" and result.tokens_out < 64


def test_streaming_pieces_add_up_and_telemetry(runner):
    pieces = []
    result = runner.generate("Name three colors.", SamplingParams(max_tokens=16),
                             on_token=lambda piece, _id: pieces.append(piece))
    assert "".join(pieces) == result.text and len(pieces) >= 5
    assert result.prefill_ms > 0 and result.tokens_in > 10
    assert result.tokens_out == len(result.token_ids) == len(result.decode_step_ms) + (result.finish_reason != "eos")
    assert all(ms > 0 for ms in result.decode_step_ms)


def test_detokenized_bytes_match_the_tokenizer_including_multibyte(runner):
    text = "Café ☕ naïve 日本語 — ok"
    ids = runner.tokenize(text)[1:]
    assert runner._detokenize_impl(ids).decode("utf-8") == runner._tok.tokenizer.decode(ids)
    split = [runner._detokenize_impl([t]) for t in ids]
    assert any(not _decodes(piece) for piece in split)  # some character spans tokens


def _decodes(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def test_stop_string_ends_output_before_it(runner):
    free = runner.generate(STORY, SamplingParams(max_tokens=24))
    words = free.text.split()
    assert len(words) > 6
    stop = " " + words[4]
    stopped = runner.generate(STORY, SamplingParams(max_tokens=24, stop=[stop]))
    assert stopped.finish_reason == "stop"
    assert stopped.text == free.text[: free.text.index(stop)]


def test_seed_reproduces_sampling(runner):
    params = lambda seed: SamplingParams(max_tokens=12, temperature=1.0, top_p=0.95, seed=seed)  # noqa: E731
    first = runner.generate(STORY, params(7))
    assert runner.generate(STORY, params(7)).token_ids == first.token_ids
    assert runner.generate(STORY, params(8)).token_ids != first.token_ids


def test_deadline_cuts_within_one_decode_step(runner):
    runner.generate(STORY, SamplingParams(max_tokens=4))  # warm the step estimate
    deadline_s = 0.6
    start = time.monotonic()
    result = runner.generate(STORY, SamplingParams(max_tokens=500), deadline=Deadline(deadline_s, start))
    elapsed = time.monotonic() - start
    assert result.finish_reason == "deadline" and result.tokens_out > 0
    step_s = max(result.decode_step_ms) / 1000
    assert elapsed <= deadline_s + step_s + 0.05


def test_deadline_stops_a_long_prefill(runner):
    prompt = " ".join(["The ship sailed on across the quiet grey sea."] * 80)  # ~800 tokens
    start = time.monotonic()
    result = runner.generate(prompt, SamplingParams(max_tokens=8), deadline=Deadline(0.1, start), chat=False)
    elapsed = time.monotonic() - start
    assert result.finish_reason == "deadline" and result.tokens_out == 0
    assert elapsed < 0.4  # a full prefill of this prompt takes well over a second here
    after = runner.generate("Name three colors.", SamplingParams(max_tokens=4))
    assert after.tokens_out == 4  # the runner is usable after a terminated run


def test_cancel_from_another_thread(runner):
    token = CancelToken()
    timer = threading.Timer(0.3, token.cancel)
    timer.start()
    try:
        result = runner.generate(STORY, SamplingParams(max_tokens=500), cancel=token)
    finally:
        timer.cancel()
    assert result.finish_reason == "cancelled" and 0 < result.tokens_out < 500


def test_logits_for_agrees_with_the_kv_cache_path(runner):
    ids = runner.tokenize("The quick brown fox jumps over the lazy")
    full = runner.logits_for(ids)
    assert full.shape == (len(ids), 49152)
    prefill = runner._prefill_impl(ids[:-1], lambda: False)
    step = runner._decode_impl(ids[-1], lambda: False)
    np.testing.assert_allclose(prefill, full[-2], atol=1e-3)
    np.testing.assert_allclose(step, full[-1], atol=1e-3)


def test_measurements_for_the_profiler(runner):
    assert runner.measure_prefill_ms(64) > 0
    times = runner.measure_decode_ms(64, batch=2, steps=2)
    assert len(times) == 2 and all(t > 0 for t in times)


def test_missing_tokenizer_or_cache_inputs_are_clear_errors(onnx_fp32, tmp_path):
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "model.onnx").symlink_to(onnx_fp32)
    with pytest.raises(ModelFileError, match="tokenizer.json"):
        OnnxRuntimeRunner(alone / "model.onnx").load()
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Cast", ["input_ids"], ["logits"], to=TensorProto.FLOAT)], "g",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "n"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, "n"])],
    )
    no_cache = tmp_path / "no_cache.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), no_cache)
    with pytest.raises(ModelFileError, match="past_key_values"):
        OnnxRuntimeRunner(no_cache).load()
    with pytest.raises(ModelFileError, match="not found"):
        OnnxRuntimeRunner(tmp_path / "nothing.onnx").load()


def test_constrained_json_through_the_same_sampler(runner):
    """The constraint path is the runner-independent sampler: ONNX Runtime gets it too, with
    llguidance's tokenizer built from tokenizer.json."""
    import jsonschema

    from edgert.constraint import Constraint

    schema = {"type": "object", "properties": {"action": {"enum": ["stop", "go"]}, "speed": {"type": "number"}},
              "required": ["action", "speed"], "additionalProperties": False}
    result = runner.generate("Obstacle ahead. Reply in JSON with action and speed.",
                             SamplingParams(max_tokens=40, constraint=Constraint.json_schema(schema)))
    assert result.constraint_satisfied, result.text
    jsonschema.validate(json.loads(result.text), schema)
    assert runner.guide().build_ms > 0 and result.mask_ms
