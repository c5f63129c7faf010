"""On an NVIDIA GPU with a CUDA build of llama-cpp-python: the runner offloads and meets deadlines."""

import json
import time
from pathlib import Path

import pytest

from edgert.runners.types import Deadline, SamplingParams
from edgert.runners.llama_cpp import LlamaCppRunner

REPORTS = Path(__file__).parent / "reports"


@pytest.mark.gpu
def test_gpu_build_generates_and_honours_deadline(device_model):
    import llama_cpp

    if not llama_cpp.llama_supports_gpu_offload():
        pytest.skip("llama-cpp-python was built without GPU offload (CMAKE_ARGS=-DGGML_CUDA=on)")
    with LlamaCppRunner(device_model, n_ctx=2048) as runner:
        free = runner.generate("Write a long story.", SamplingParams(max_tokens=128))
        start = time.monotonic()
        cut = runner.generate("Write a long story.", SamplingParams(max_tokens=4000), deadline=Deadline(0.2, start=start))
        late_s = time.monotonic() - start - 0.2
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / "llama_cpp_gpu.json").write_text(json.dumps({
        "decode_tokens_per_s": free.decode_tokens_per_s, "prefill_ms": free.prefill_ms, "deadline_late_s": late_s,
    }, indent=2))
    assert cut.finish_reason == "deadline"
    assert late_s <= max(free.decode_step_ms) / 1000
