"""Structured output and tools through edgert serve on the real SmolLM2 bundle, with the
official openai client: response_format (plain and streaming) validated with jsonschema,
tool calls whose arguments validate, n, logprobs, usage in streams, fallbacks by the
deadline, tool messages in the history, and every unsupported field refused."""

import json

import jsonschema
import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

from edgert.runtime import Runtime  # noqa: E402
from test_app import client, serving  # noqa: E402,F401 (client: the openai client fixture on served)

pytestmark = pytest.mark.slow
ROBOT = {"type": "object", "properties": {"action": {"type": "string", "enum": ["stop", "go"]},
                                          "speed": {"type": "number"}},
         "required": ["action", "speed"], "additionalProperties": False}
ASK = [{"role": "user", "content": "An obstacle is 1 m ahead. Reply in JSON: action (stop or go), speed in m/s."}]
MOVE = {"type": "function", "function": {"name": "move", "description": "Drive the robot",
                                         "parameters": {"type": "object", "properties": {
                                             "direction": {"type": "string", "enum": ["left", "right", "ahead"]},
                                             "metres": {"type": "number"}},
                                             "required": ["direction", "metres"]}}}
BEEP = {"type": "function", "function": {"name": "beep", "parameters": {"type": "object", "properties": {}}}}


@pytest.fixture(scope="module")
def served(smollm2_bundle):
    yield from serving(Runtime(smollm2_bundle, n_threads=2))


def _schema_format(schema=ROBOT):
    return {"type": "json_schema", "json_schema": {"name": "robot", "schema": schema, "strict": True}}


def test_json_schema_response_validates(client):
    r = client.chat.completions.create(model="smol", messages=ASK, max_tokens=60, response_format=_schema_format())
    jsonschema.validate(json.loads(r.choices[0].message.content), ROBOT)
    assert r.choices[0].finish_reason == "stop"
    constraint = r.model_extra["edgert"]["constraint"]
    assert constraint["satisfied"] is True and constraint["kind"] == "json_schema robot"
    assert constraint["mask_ms_median"] > 0


def test_json_schema_streaming_validates(client):
    stream = client.chat.completions.create(model="smol", messages=ASK, max_tokens=60, stream=True,
                                            response_format=_schema_format(), stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    jsonschema.validate(json.loads(text), ROBOT)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0  # the usage chunk comes last
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_json_object_mode(client):
    r = client.chat.completions.create(model="smol", messages=ASK, max_tokens=40,
                                       response_format={"type": "json_object"})
    assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_a_required_tool_call_comes_back_as_tool_calls(client):
    for choice in ("required", {"type": "function", "function": {"name": "move"}}):
        r = client.chat.completions.create(model="smol", max_tokens=60, tools=[MOVE, BEEP], tool_choice=choice,
                                           messages=[{"role": "user", "content": "Drive two metres to the left."}])
        message = r.choices[0].message
        assert r.choices[0].finish_reason == "tool_calls" and message.content is None
        call = message.tool_calls[0]
        assert call.type == "function" and call.id.startswith("call_")
        tool = {"move": MOVE, "beep": BEEP}[call.function.name]
        assert choice == "required" or tool is MOVE
        jsonschema.validate(json.loads(call.function.arguments), tool["function"]["parameters"])


def test_tool_calls_stream_as_a_delta(client):
    stream = client.chat.completions.create(model="smol", max_tokens=60, tools=[MOVE], tool_choice="required",
                                            stream=True, messages=[{"role": "user", "content": "Go right 3 m."}])
    calls = [tc for c in stream if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls and calls[0].function.name == "move"
    jsonschema.validate(json.loads(calls[0].function.arguments), MOVE["function"]["parameters"])


def test_auto_tool_choice_is_text_or_a_valid_call(client):
    r = client.chat.completions.create(model="smol", max_tokens=40, tools=[MOVE], tool_choice="auto",
                                       messages=[{"role": "user", "content": "Say hello."}])
    message = r.choices[0].message
    if message.tool_calls:
        jsonschema.validate(json.loads(message.tool_calls[0].function.arguments), MOVE["function"]["parameters"])
    else:
        assert message.content and not message.content.lstrip().startswith("{")


def test_tool_results_in_the_history_reach_the_template(client):
    history = [{"role": "user", "content": "Drive left 2 m."},
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "call_1", "type": "function",
                    "function": {"name": "move", "arguments": '{"direction": "left", "metres": 2}'}}]},
               {"role": "tool", "tool_call_id": "call_1", "content": '{"ok": true}'}]
    r = client.chat.completions.create(model="smol", max_tokens=12, tools=[MOVE], tool_choice="none",
                                       messages=history)
    assert r.choices[0].message.content is not None and not r.choices[0].message.tool_calls


def test_n_logprobs_and_usage(client):
    r = client.chat.completions.create(model="smol", messages=ASK, max_tokens=24, n=3, temperature=1.0, seed=7,
                                       response_format=_schema_format())
    assert [c.index for c in r.choices] == [0, 1, 2]
    for c in r.choices:
        jsonschema.validate(json.loads(c.message.content), ROBOT)
    assert r.usage.prompt_tokens_details.cached_tokens >= 0
    lp = client.chat.completions.create(model="smol", messages=[{"role": "user", "content": "Hi"}], max_tokens=5,
                                        logprobs=True, top_logprobs=2)
    content = lp.choices[0].logprobs.content
    assert len(content) == lp.usage.completion_tokens
    assert "".join(t.token for t in content) == lp.choices[0].message.content
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content)


def test_a_fallback_replaces_an_answer_that_misses_the_deadline(client):
    r = client.chat.completions.create(model="smol", messages=ASK, max_tokens=60, response_format=_schema_format(),
                                       extra_body={"deadline_ms": 2, "fallback": {"action": "stop", "speed": 0}})
    assert json.loads(r.choices[0].message.content) == {"action": "stop", "speed": 0}
    constraint = r.model_extra["edgert"]["constraint"]
    assert constraint["satisfied"] is False and constraint["fallback_used"] is True
    bare = client.chat.completions.create(model="smol", messages=ASK, max_tokens=60, response_format=_schema_format(),
                                          extra_body={"deadline_ms": 2})
    assert bare.model_extra["edgert"]["constraint"]["satisfied"] is False  # never passed off as valid


@pytest.mark.parametrize("extra", [{"top_k": 40}, {"audio": {"voice": "alloy"}}, {"functions": []},
                                   {"echo": True}, {"best_of": 2}, {"store": True}, {"modalities": ["audio"]},
                                   {"stream_options": {"include_usage": True, "other": 1}}])
def test_unsupported_fields_are_400(served, extra):
    body = {"model": "smol", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "stream": True, **extra}
    status, _headers, reply = served.raw("POST", "/v1/chat/completions", body)
    assert status == 400 and reply["error"]["code"] in ("unsupported_parameter", "unknown_parameter")


def test_the_tool_calling_example_runs_a_tool_and_replies(served):
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "tool_calling.py"
    out = subprocess.run([sys.executable, str(example), "--url", served.base + "/v1", "--json", "Drive 2 m left."],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["call"] in ("drive", "read_sensor") and isinstance(summary["arguments"], dict)
    assert isinstance(summary["reply"], str)
    down = subprocess.run([sys.executable, str(example), "--url", "http://127.0.0.1:9/v1"], capture_output=True,
                          text=True, timeout=60)
    assert down.returncode == 2 and "no edgert server" in down.stderr and "Traceback" not in down.stderr
