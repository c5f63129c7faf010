"""The llama.cpp runner on the real SmolLM2-135M-Instruct file (no mock of the engine)."""

import threading
import time

import numpy as np
import pytest

from edgert.errors import RunnerStateError, UsageError
from edgert.runners.types import CancelToken, Deadline, SamplingParams
from edgert.runners.llama_cpp import LlamaCppRunner

STORY = "Write a very long story about a robot that explores the ocean, with many chapters."


def test_streaming_pieces_add_up_to_the_text(smollm2_runner):
    pieces = []
    result = smollm2_runner.generate(
        "Name three colors.", SamplingParams(max_tokens=24), on_token=lambda piece, _id: pieces.append(piece)
    )
    assert len(pieces) >= 5
    assert "".join(pieces) == result.text
    assert result.tokens_out == len(result.token_ids) == len(result.decode_step_ms) + (result.finish_reason != "eos")
    assert result.prefill_ms > 0 and result.tokens_in > 10
    assert all(ms > 0 for ms in result.decode_step_ms)


def test_max_tokens_cuts_with_reason_length(smollm2_runner):
    result = smollm2_runner.generate(STORY, SamplingParams(max_tokens=7))
    assert result.finish_reason == "length"
    assert result.tokens_out == 7


def test_greedy_is_deterministic(smollm2_runner):
    a = smollm2_runner.generate("What is 2 + 2?", SamplingParams(max_tokens=16))
    b = smollm2_runner.generate("What is 2 + 2?", SamplingParams(max_tokens=16))
    assert a.token_ids == b.token_ids


def test_seed_reproduces_sampling_and_other_seeds_differ(smollm2_runner):
    params = lambda seed: SamplingParams(max_tokens=24, temperature=1.0, top_p=0.95, seed=seed)  # noqa: E731
    first = smollm2_runner.generate(STORY, params(7))
    again = smollm2_runner.generate(STORY, params(7))
    assert first.token_ids == again.token_ids
    others = {tuple(smollm2_runner.generate(STORY, params(s)).token_ids) for s in (8, 9, 10)}
    assert len(others | {tuple(first.token_ids)}) >= 3


def test_stop_string_ends_output_before_it(smollm2_runner):
    free = smollm2_runner.generate(STORY, SamplingParams(max_tokens=40))
    words = free.text.split()
    assert len(words) > 6
    stop = " " + words[4]
    cut = free.text.index(stop)
    stopped_pieces = []
    stopped = smollm2_runner.generate(
        STORY, SamplingParams(max_tokens=40, stop=[stop]), on_token=lambda p, _i: stopped_pieces.append(p)
    )
    assert stopped.finish_reason == "stop"
    assert stopped.text == free.text[:cut]
    assert "".join(stopped_pieces) == stopped.text
    assert stop not in stopped.text


def test_chat_template_is_applied_from_the_gguf(smollm2_runner):
    text = smollm2_runner.format_prompt("Hello there", system="Be brief.")
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n"
    )
    default = smollm2_runner.format_prompt("Hello there")
    assert "You are a helpful AI assistant named SmolLM" in default
    chat = smollm2_runner.generate("Hello there", SamplingParams(max_tokens=4))
    raw = smollm2_runner.generate("Hello there", SamplingParams(max_tokens=4), chat=False)
    assert chat.tokens_in == len(smollm2_runner.tokenize(default)) > raw.tokens_in
    # the special markers are single tokens, not spelled out
    assert smollm2_runner.tokenize("<|im_start|>user") [0] == 1


def test_instruct_model_ends_its_turn_with_eos(smollm2_runner):
    result = smollm2_runner.generate("Reply with one word: hello", SamplingParams(max_tokens=64))
    assert result.finish_reason == "eos"
    assert "<|im_end|>" not in result.text


def _median_step_s(runner) -> float:
    warm = runner.generate(STORY, SamplingParams(max_tokens=24))
    return float(np.median(warm.decode_step_ms)) / 1000


@pytest.mark.parametrize("deadline_s", [0.05, 0.4])
def test_deadline_cuts_a_long_generation_within_one_decode_step(smollm2_runner, deadline_s):
    """0.05 s falls inside prompt evaluation (abort callback), 0.4 s inside decoding."""
    step_s = _median_step_s(smollm2_runner)
    smollm2_runner.forget_cache()  # the warm-up left this prompt in the cache
    start = time.monotonic()
    result = smollm2_runner.generate(STORY, SamplingParams(max_tokens=1000), deadline=Deadline(deadline_s, start=start))
    elapsed = time.monotonic() - start
    assert result.finish_reason == "deadline" and result.deadline_cut
    assert elapsed <= deadline_s + step_s, f"returned {elapsed - deadline_s:.4f} s late, step is {step_s:.4f} s"
    if deadline_s == 0.05:
        assert result.tokens_out == 0  # the prompt alone takes longer than 50 ms here
    else:
        assert result.tokens_out > 0
    # the runner is usable afterwards (an aborted prefill leaves no stale KV cache)
    again = smollm2_runner.generate("What is 2 + 2?", SamplingParams(max_tokens=16))
    reference = smollm2_runner.generate("What is 2 + 2?", SamplingParams(max_tokens=16))
    assert again.token_ids == reference.token_ids and again.tokens_out > 0


def test_cancel_from_another_thread_stops_generation(smollm2_runner):
    started = threading.Event()
    results = []

    def work():
        results.append(smollm2_runner.generate(STORY, SamplingParams(max_tokens=900), on_token=lambda p, i: started.set()))

    thread = threading.Thread(target=work)
    thread.start()
    assert started.wait(10)
    smollm2_runner.cancel()
    thread.join(2)
    assert not thread.is_alive()
    assert results[0].finish_reason == "cancelled"
    assert 0 < results[0].tokens_out < 900


def test_cancel_token_during_prefill(smollm2_runner):
    token = CancelToken()
    threading.Timer(0.02, token.cancel).start()
    long_prompt = "Summarize: " + "The robot walked along the shore and counted the waves. " * 40
    start = time.monotonic()
    result = smollm2_runner.generate(long_prompt, SamplingParams(max_tokens=50), cancel=token)
    assert result.finish_reason == "cancelled"
    assert result.tokens_out == 0
    assert time.monotonic() - start < 0.5  # the full prompt takes > 1 s here


def test_bad_inputs_are_refused(smollm2_runner):
    with pytest.raises(UsageError, match="max_tokens"):
        smollm2_runner.generate("hi", SamplingParams(max_tokens=0))
    with pytest.raises(UsageError, match="top_p"):
        smollm2_runner.generate("hi", SamplingParams(top_p=0))
    with pytest.raises(UsageError, match="the context holds 1024"):
        smollm2_runner.generate("word " * 2000)
    with pytest.raises(UsageError, match="deadline"):
        Deadline(-1)


def test_state_errors(smollm2_path):
    runner = LlamaCppRunner(smollm2_path, n_ctx=256, n_threads=1)
    with pytest.raises(RunnerStateError, match="not loaded"):
        runner.generate("hi")
    with runner:
        assert runner.generate("hi", SamplingParams(max_tokens=2)).tokens_out <= 2
    with pytest.raises(RunnerStateError, match="closed"):
        runner.generate("hi")


def test_sampler_follows_the_softmax_and_truncates_to_the_nucleus():
    from edgert.runners.sampling import sample

    rng = np.random.default_rng(0)
    logits = np.array([2.0, 1.0, 0.0, -1.0], dtype=np.float32)
    probs = np.exp(logits) / np.exp(logits).sum()
    draws = np.bincount([sample(logits, 1.0, 1.0, rng)[0] for _ in range(20000)], minlength=4) / 20000
    assert np.allclose(draws, probs, atol=0.015)
    nucleus = np.bincount([sample(logits, 1.0, 0.7, rng)[0] for _ in range(20000)], minlength=4) / 20000
    assert nucleus[2] == nucleus[3] == 0
    assert np.allclose(nucleus[:2], probs[:2] / probs[:2].sum(), atol=0.015)
    token, logprob = sample(logits, 0.0, 1.0, rng)
    assert token == 0 and logprob == pytest.approx(float(np.log(probs[0])), abs=1e-5)


def test_a_prefill_cut_by_the_deadline_keeps_the_cached_prefix(smollm2_runner):
    """A control loop's fixed prefix survives a request the deadline cut in prompt evaluation:
    the next request evaluates only its own tokens, not the whole prompt again."""
    prefix = smollm2_runner.tokenize("You control a robot. Answer stop or go.\n" * 4)
    smollm2_runner.forget_cache()
    smollm2_runner.generate_ids(prefix, SamplingParams(max_tokens=1))
    long_tail = smollm2_runner.tokenize_continuation(" an obstacle report that goes on and on," * 60)
    cut = smollm2_runner.generate_ids(prefix + long_tail, SamplingParams(max_tokens=4), deadline=Deadline(0.03))
    assert cut.finish_reason == "deadline" and cut.tokens_out == 0 and cut.cached_tokens == len(prefix)
    after = smollm2_runner.generate_ids(prefix + smollm2_runner.tokenize_continuation(" wall, 1 m"),
                                        SamplingParams(max_tokens=2))
    assert after.cached_tokens == len(prefix)
