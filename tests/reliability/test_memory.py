"""Memory estimates against llama.cpp's real resident set, refusal, and cgroup limits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgert.errors import EdgertError, InsufficientMemoryError
from edgert.formats.gguf import read_header
from edgert.formats import MB, MemoryEstimate
from edgert.memory import available_memory_bytes, cgroup_memory, check_fits, estimate_memory
from gguf_factory import ARR, STR, U32, kv, write_gguf

# Loads the model in a fresh process: RSS before loading (llama.cpp imported and initialised),
# after loading, and after a prompt of n_prompt tokens plus 8 generated ones; and the buffer
# sizes llama.cpp logs, for comparing the parts one by one.
RSS_PROBE = r"""
import json, logging, re, sys
import psutil
from edgert.runners.types import SamplingParams
from edgert.runners.llama_cpp import LlamaCppRunner, _llama_cpp
path, n_ctx, n_prompt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
buffers = {}
class Grab(logging.Handler):
    def emit(self, record):
        m = re.search(r"(CPU_Mapped model|CPU_REPACK model|CPU KV|CPU compute|CPU  output) buffer size = +([0-9.]+) MiB", record.getMessage())
        if m:
            buffers[m.group(1)] = buffers.get(m.group(1), 0) + float(m.group(2))
log = logging.getLogger("edgert.llama_cpp")
log.setLevel(logging.DEBUG)
log.addHandler(Grab())
_llama_cpp().llama_backend_init()
proc = psutil.Process()
rss = [proc.memory_info().rss]
with LlamaCppRunner(path, n_ctx=n_ctx, n_threads=1) as runner:  # 2 threads stall on a busy machine
    rss.append(proc.memory_info().rss)
    words = ("the river ran past the mill and the old stone bridge where children played " * 400).split()
    ids = runner.tokenize(" ".join(words))[:n_prompt]
    prompt = runner._detokenize_impl(ids).decode("utf-8", errors="ignore")
    result = runner.generate(prompt, SamplingParams(max_tokens=8), chat=False)
    rss.append(proc.memory_info().rss)
print(json.dumps(dict(baseline_mb=rss[0] / 1e6, load_mb=(rss[1] - rss[0]) / 1e6, after_prompt_mb=(rss[2] - rss[0]) / 1e6,
                      tokens_in=result.tokens_in, buffers_mib=buffers)))
"""


def measure_llama_rss(model_path: Path, n_ctx: int = 2048, n_prompt: int = 600) -> dict:
    """RSS growth (MB) of loading ``model_path`` with edgert's llama.cpp runner, in a fresh process."""
    result = subprocess.run([sys.executable, "-c", RSS_PROBE, str(model_path), str(n_ctx), str(n_prompt)],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_estimate_matches_the_resident_set_of_smollm2(smollm2_path):
    estimate = estimate_memory(smollm2_path, n_ctx=2048)
    measured = measure_llama_rss(smollm2_path, n_ctx=2048)
    # the KV cache is what llama.cpp allocates, to the byte
    assert estimate.kv_cache_bytes == pytest.approx(measured["buffers_mib"]["CPU KV"] * 2**20, rel=0.01)
    assert estimate.weights_bytes == pytest.approx(measured["buffers_mib"]["CPU_Mapped model"] * 2**20, rel=0.02)
    # the whole: within a band of the measured growth (page cache, allocator and threads vary)
    ratio = estimate.total_bytes / (measured["after_prompt_mb"] * MB)
    assert 0.8 <= ratio <= 1.25, (estimate.describe(), measured)
    # and well under llama.cpp's own worst-case reservation, which never becomes resident
    reserved = sum(measured["buffers_mib"].values()) * 2**20
    assert estimate.total_bytes < reserved


def test_refuses_with_one_line_naming_every_part():
    estimate = MemoryEstimate.of(97 * MB, 47 * MB, 25 * MB, 18 * MB, label="smollm2.gguf", n_ctx=2048)
    with pytest.raises(InsufficientMemoryError) as caught:
        check_fits(estimate, available=150 * MB)
    message = str(caught.value)
    assert isinstance(caught.value, EdgertError) and "\n" not in message
    for fragment in ("smollm2.gguf at n_ctx 2048", "needs about 187 MB", "weights 97 MB", "KV cache 47 MB",
                     "compute 25 MB", "overhead 18 MB", "64 MB margin", "150 MB available"):
        assert fragment in message, (fragment, message)
    check_fits(estimate, available=300 * MB)
    with pytest.raises(InsufficientMemoryError):
        check_fits(estimate, available=200 * MB)  # fits, but not with the margin
    check_fits(estimate, available=200 * MB, margin_bytes=0)


def test_real_model_refused_when_available_memory_is_small(smollm2_path):
    estimate = estimate_memory(smollm2_path, n_ctx=8192)
    with pytest.raises(InsufficientMemoryError, match=r"KV cache 189 MB"):
        check_fits(estimate, available=256 * MB)
    check_fits(estimate_memory(smollm2_path, n_ctx=256), available=256 * MB)


def test_kv_cache_follows_the_header(tmp_path):
    def model(arch, extra, n_layer=6):
        meta = [kv("general.architecture", STR, arch), kv(f"{arch}.block_count", U32, n_layer),
                kv(f"{arch}.embedding_length", U32, 64), kv(f"{arch}.feed_forward_length", U32, 128),
                kv(f"{arch}.attention.head_count", U32, 4), kv("tokenizer.ggml.tokens", ARR, (STR, ["a", "b"])), *extra]
        return read_header(write_gguf(tmp_path / f"{arch}.gguf", metadata=meta))

    llama = model("llama", [kv("llama.attention.head_count_kv", U32, 2)])
    # 6 layers x 1000 cells x 2 KV heads x (16 + 16) x 2 bytes
    assert estimate_memory(llama, n_ctx=1000).kv_cache_bytes == 6 * 1000 * 2 * 32 * 2
    assert estimate_memory(llama, n_ctx=1000, n_seq=4, kv_type_bytes=1).kv_cache_bytes == 6 * 4000 * 2 * 32
    per_layer = model("qwen2", [kv("qwen2.attention.head_count_kv", ARR, (U32, [1, 2, 3, 4, 5, 6]))])
    assert estimate_memory(per_layer, n_ctx=100).kv_cache_bytes == 100 * 21 * 32 * 2
    gemma = model("gemma3", [kv("gemma3.attention.head_count_kv", U32, 1), kv("gemma3.attention.key_length", U32, 32),
                             kv("gemma3.attention.value_length", U32, 32), kv("gemma3.attention.sliding_window", U32, 64)],
                  n_layer=12)
    full = estimate_memory(gemma, n_ctx=4096).kv_cache_bytes
    assert full == 12 * 4096 * 64 * 2
    # layers 6 and 12 see the whole context, the other ten only window + micro-batch
    assert estimate_memory(gemma, n_ctx=4096, swa_full=False).kv_cache_bytes == (2 * 4096 + 10 * (64 + 512)) * 64 * 2


def test_onnx_and_tensorrt_estimates_come_from_file_sizes(tmp_path):
    export = tmp_path / "onnx"
    export.mkdir()
    (export / "model.onnx").write_bytes(b"\0" * 1000)
    (export / "model.onnx_data").write_bytes(b"\0" * 9000)
    (export / "config.json").write_text(json.dumps(dict(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                                        hidden_size=64)))
    estimate = estimate_memory(export, n_ctx=100, kv_type_bytes=4)
    assert estimate.weights_bytes == 10_000 + len((export / "config.json").read_bytes())
    assert estimate.kv_cache_bytes == 2 * 100 * 2 * 16 * 2 * 4
    assert "not validated" in estimate.method
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\0" * 5000)
    assert estimate_memory(engine, n_ctx=100).weights_bytes == 5000
    with pytest.raises(EdgertError, match="expected a .gguf"):
        estimate_memory(tmp_path / "onnx" / "config.json", n_ctx=100)


def write_tree(root: Path, files: dict) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_cgroup_v2_limit_is_the_tightest_on_the_way_up(tmp_path):
    root = write_tree(tmp_path, {
        "proc/self/cgroup": "0::/edge.slice/app.scope\n",
        "sys/fs/cgroup/cgroup.controllers": "cpu memory pids\n",
        "sys/fs/cgroup/edge.slice/memory.max": f"{1024 * 2**20}\n",
        "sys/fs/cgroup/edge.slice/memory.current": f"{300 * 2**20}\n",
        "sys/fs/cgroup/edge.slice/app.scope/memory.max": "max\n",
        "sys/fs/cgroup/edge.slice/app.scope/memory.current": f"{200 * 2**20}\n",
    })
    found = cgroup_memory(root)
    assert (found.limit_bytes, found.usage_bytes) == (1024 * 2**20, 300 * 2**20)
    assert available_memory_bytes(root) == 724 * 2**20  # far below this machine's free memory
    estimate = MemoryEstimate.of(500 * MB, 200 * MB, 50 * MB, 20 * MB, label="m.gguf", n_ctx=4096)
    with pytest.raises(InsufficientMemoryError, match=r"759 MB available"):
        check_fits(estimate, available=available_memory_bytes(root))


def test_cgroup_v1_limit_and_no_limit(tmp_path):
    v1 = write_tree(tmp_path / "v1", {
        "proc/self/cgroup": "5:cpu,cpuacct:/\n4:memory:/process_api/abc\n0::/\n",
        "sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
        "sys/fs/cgroup/memory/process_api/abc/memory.limit_in_bytes": f"{512 * 2**20}\n",
        "sys/fs/cgroup/memory/process_api/abc/memory.usage_in_bytes": f"{100 * 2**20}\n",
    })
    assert cgroup_memory(v1).available_bytes == 412 * 2**20
    unlimited = write_tree(tmp_path / "none", {
        "proc/self/cgroup": "0::/\n",
        "sys/fs/cgroup/cgroup.controllers": "memory\n",
        "sys/fs/cgroup/memory.max": "max\n",
    })
    assert cgroup_memory(unlimited) is None
    assert cgroup_memory(tmp_path / "empty") is None
    assert available_memory_bytes(unlimited) > 0
