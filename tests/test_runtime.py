import threading

import pytest

from edgert import Runtime
from edgert.errors import DeadlineError, UnknownVariantError


def test_generate_returns_text_and_telemetry(smollm2_bundle):
    with Runtime(smollm2_bundle, n_threads=2) as runtime:
        result = runtime.generate("What is the capital of France?", deadline_s=20, max_tokens=24)
    assert result.text.strip()
    assert result.variant == "smollm2-135m-instruct-q4_1"
    assert result.deadline_met is True and not result.deadline_cut
    assert result.load_ms > 0
    data = result.to_dict()
    assert data["tokens_out"] == result.generation.tokens_out > 0
    assert data["prefill_ms"] > 0 and data["decode_tokens_per_s"] > 0


def test_deadline_shorter_than_loading_is_a_clear_error(smollm2_bundle):
    with Runtime(smollm2_bundle, n_threads=2) as runtime:
        with pytest.raises(DeadlineError, match="shorter than loading the model"):
            runtime.generate("hi", deadline_s=0.001)
        # once loaded, a short deadline is honoured instead
        result = runtime.generate("Write a long story.", deadline_s=0.3, max_tokens=1000)
    assert result.deadline_cut and result.latency_ms <= 300 + 50


def test_cancel_from_another_thread(smollm2_bundle):
    with Runtime(smollm2_bundle, n_threads=2) as runtime:
        runtime.load()
        first = threading.Event()
        timer = threading.Thread(target=lambda: (first.wait(10), runtime.cancel()))
        timer.start()
        result = runtime.generate("Write a long story.", max_tokens=900, on_token=lambda p, i: first.set())
        timer.join()
    assert result.finish_reason == "cancelled"


def test_unknown_variant(smollm2_bundle):
    with pytest.raises(UnknownVariantError, match="smollm2-135m-instruct-q4_1"):
        Runtime(smollm2_bundle, variant="q8_0")
