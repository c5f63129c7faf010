"""The one decode loop: step records travel with the results, for one sequence and for several."""

from edgert.runners.types import Deadline, SamplingParams


def test_a_result_carries_the_step_records_of_its_call(smollm2_runner):
    result = smollm2_runner.generate("Count to five.", SamplingParams(max_tokens=6))
    kinds = [s.kind for s in result.steps]
    assert kinds[0] == "prefill" and kinds[1:] == ["decode"] * len(result.decode_step_ms)
    assert [s.ms for s in result.steps[1:]] == result.decode_step_ms
    assert smollm2_runner.step_estimate_s() > 0


def test_samples_of_one_call_share_one_list_of_batched_steps(smollm2_runner):
    ids = smollm2_runner.encode("Name a color.")
    results = smollm2_runner.generate_many(ids, 3, SamplingParams(max_tokens=5, temperature=1.0, seed=1))
    assert len(results) == 3 and all(r.steps is results[0].steps for r in results)
    decode = [s for s in results[0].steps if s.kind == "decode"]
    assert decode and decode[0].size == 3  # one step carries every live sequence
    empty = smollm2_runner.empty_result(ids, "dropped", Deadline(None))
    assert (empty.tokens_out, empty.finish_reason, empty.steps) == (0, "dropped", [])
