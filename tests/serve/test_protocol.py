"""The OpenAI protocol without a server: bodies to Requests, refusals as 4xx with the body's
field name, response envelopes, error mapping; and that it imports without FastAPI."""

import json
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest

from edgert.errors import DeadlineError, EdgertError, UsageError
from edgert.request import Request
from edgert.serve import protocol, responses
from edgert.result import RuntimeResult
from edgert.runners.types import GenerationResult
from edgert.serve.protocol import RequestError

HI = [{"role": "user", "content": "hi"}]


def parse(body, kind="chat", **kw):
    kw = {"model_id": "smol", "variants": ["q4"], "has_profile": True, **kw}
    return protocol.parse(kind, json.dumps(body).encode(), **kw)


def test_a_chat_body_becomes_a_checked_request():
    job = parse({"model": "smol", "messages": [{"role": "developer", "content": "Be brief."},
                                              {"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
                 "deadline_ms": 1500, "max_completion_tokens": 12, "max_tokens": 99, "temperature": 0.5,
                 "stop": "\n", "seed": 7, "stream": True}, arrived=123.0)
    r = job.request
    assert isinstance(r, Request) and r.chat and job.stream and job.kind == "chat" and job.model == "smol"
    assert r.prompt == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert (r.deadline_s, r.max_tokens, r.temperature, r.top_p, r.stop, r.seed) == (1.5, 12, 0.5, 1.0, ("\n",), 7)
    assert r.strategy is None and r.variant is None and r.started_at == 123.0 == job.arrived
    assert job.deadline_s == 1.5


def test_a_completion_body_and_the_server_defaults():
    job = parse({"model": "q4", "prompt": ["The capital of France is"]}, kind="completion", default_deadline_s=4.0)
    r = job.request
    assert r.prompt == "The capital of France is" and not r.chat and job.model == "q4" and r.variant == "q4"
    assert r.deadline_s == 4.0 and r.max_tokens == 256 and r.temperature == 0.0 and r.started_at is not None


def test_power_implies_auto_and_a_task_set_asks_the_last_user_message():
    job = parse({"model": "smol", "power_w": 15, "deadline_ms": 20000, "task_set": "arithmetic", "samples": 3,
                 "messages": [{"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
                              {"role": "user", "content": "What is 2+3?"}]})
    r = job.request
    assert r.strategy == "auto" and r.power_w == 15 and r.prompt == "What is 2+3?" and r.n == 3


@pytest.mark.parametrize("body, status, param", [
    ({"model": "nope", "messages": HI}, 404, "model"),
    ({"model": 3, "messages": HI}, 400, "model"),
    ({"model": "smol", "messages": []}, 400, "messages"),
    ({"model": "smol", "messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages"),
    ({"model": "smol", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400, "messages"),
    ({"model": "smol", "messages": HI, "deadline_ms": -5}, 400, "deadline_ms"),
    ({"model": "smol", "messages": HI, "deadline_ms": "soon"}, 400, "deadline_ms"),
    ({"model": "smol", "messages": HI, "max_tokens": 0}, 400, "max_tokens"),
    ({"model": "smol", "messages": HI, "max_completion_tokens": 0}, 400, "max_completion_tokens"),
    ({"model": "smol", "messages": HI, "max_tokens": 1.5}, 400, "max_tokens"),
    ({"model": "smol", "messages": HI, "temperature": 9}, 400, "temperature"),
    ({"model": "smol", "messages": HI, "top_p": 0}, 400, "top_p"),
    ({"model": "smol", "messages": HI, "strategy": "magic"}, 400, "strategy"),
    ({"model": "smol", "messages": HI, "strategy": "auto"}, 400, "deadline_ms"),
    ({"model": "smol", "messages": HI, "power_w": 0, "deadline_ms": 100}, 400, "power_w"),
    ({"model": "smol", "messages": HI, "energy_j": 5, "strategy": "greedy"}, 400, "energy_j"),
    ({"model": "smol", "messages": HI, "n": 9}, 400, "n"),
    ({"model": "smol", "messages": HI, "n": 2, "strategy": "sc"}, 400, "n"),
    ({"model": "smol", "messages": HI, "top_k": 40}, 400, "top_k"),
    ({"model": "smol", "messages": HI, "response_format": {"type": "xml"}}, 400, "response_format"),
    ({"model": "smol", "messages": HI, "response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "strin"}}}}, 400, "response_format"),
    ({"model": "smol", "messages": HI, "tools": [{"type": "function"}]}, 400, "tools"),
    ({"model": "smol", "messages": HI, "tool_choice": "required"}, 400, "tool_choice"),
    ({"model": "smol", "messages": HI, "top_logprobs": 3}, 400, "top_logprobs"),
    ({"model": "smol", "messages": HI, "logprobs": True, "top_logprobs": 21}, 400, "top_logprobs"),
    ({"model": "smol", "messages": HI, "logit_bias": {"x": 1}}, 400, "logit_bias"),
    ({"model": "smol", "messages": HI, "logit_bias": {"5": 101}}, 400, "logit_bias"),
    ({"model": "smol", "messages": HI, "presence_penalty": 3}, 400, "presence_penalty"),
    ({"model": "smol", "messages": HI, "stream_options": {"include_usage": True}}, 400, "stream_options"),
    ({"model": "smol", "messages": HI, "strategy": {"a": 1}}, 400, "strategy"),
    ({"model": "smol", "messages": HI, "audio": {"voice": "x"}}, 400, "audio"),
    ({"model": "smol", "messages": [{"role": "tool", "content": "5"}]}, 400, "messages"),
    ({"model": "smol", "messages": HI, "samples": 0, "strategy": "sc"}, 400, "samples"),
    ({"model": "smol", "messages": HI, "samples": 65, "strategy": "sc"}, 400, "samples"),
    ({"model": "smol", "messages": HI, "think_tokens": 8}, 400, "think_tokens"),
    ({"model": "smol", "messages": HI, "answer_type": "poem", "strategy": "greedy"}, 400, "answer_type"),
    ({"model": "smol", "messages": HI, "task_set": 5}, 400, "task_set"),
    ({"model": "smol", "messages": [{"role": "system", "content": "x"}], "task_set": "t", "strategy": "sc"},
     400, "messages"),
    ({"model": "smol", "messages": HI, "stop": [""]}, 400, "stop"),
    ({"model": "smol", "messages": HI, "stop": 5}, 400, "stop"),
    ({"model": "smol", "messages": HI, "seed": "x"}, 400, "seed"),
    ({"model": "smol", "messages": HI, "stream": "yes"}, 400, "stream"),
    ({"model": "smol", "messages": HI, "ignore_eos": 1}, 400, "ignore_eos"),
])
def test_bad_bodies_are_refused_with_their_field(body, status, param):
    with pytest.raises(RequestError) as caught:
        parse(body)
    assert caught.value.status == status and caught.value.param == param and caught.value.message
    assert caught.value.body()["error"]["param"] == param


def test_refusals_of_non_json_and_empty_prompts():
    for raw in (b"{not json", b"[1, 2]", b"\xff"):
        with pytest.raises(RequestError) as caught:
            protocol.parse("chat", raw, model_id="smol", variants=[])
        assert caught.value.status == 400 and caught.value.param is None
    with pytest.raises(RequestError) as caught:
        parse({"model": "smol", "prompt": ""}, kind="completion")
    assert caught.value.param == "prompt"


def test_check_messages_name_the_body_field_and_the_servers_remedy():
    with pytest.raises(RequestError) as caught:
        parse({"model": "smol", "messages": HI, "deadline_ms": -5})
    assert caught.value.message.startswith("deadline_ms must be a positive number of milliseconds")
    assert caught.value.param == "deadline_ms"
    with pytest.raises(RequestError) as caught:
        parse({"model": "smol", "messages": HI, "samples": 3})
    assert caught.value.param == "samples" and caught.value.message.startswith("samples need strategy (auto or a strategy name")
    with pytest.raises(RequestError) as caught:
        parse({"model": "smol", "messages": HI, "strategy": "auto", "deadline_ms": 100}, has_profile=False)
    assert caught.value.param == "strategy" and "--profile" in caught.value.message
    with pytest.raises(RequestError) as caught:
        parse({"model": "smol", "messages": HI, "strategy": "auto"})
    assert "--default-deadline" in caught.value.message


def test_runtime_errors_map_to_http_statuses():
    assert (protocol.error_for(DeadlineError("short")).status, protocol.error_for(DeadlineError("x")).param) == \
        (422, "deadline_ms")
    assert protocol.error_for(UsageError("bad")).status == 400
    assert protocol.error_for(EdgertError("no")).kind == "edgert_error"
    assert protocol.error_for(ValueError("bug")).status == 500
    refused = RequestError(503, "busy", code="queue_full")
    assert protocol.error_for(refused) is refused
    assert json.loads(responses.stream_error(refused)[6:]) == {"error": {"message": "busy", "type":
                                                                         "invalid_request_error"}}


def _result(text="Paris", finish="stop", **fields):
    generation = GenerationResult(text=text, finish_reason=finish, tokens_in=5, tokens_out=2, prefill_ms=1.0,
                                  decode_step_ms=[1.0], total_ms=2.0, token_ids=[7, 8], token_logprobs=[-0.5, -0.25],
                                  cached_tokens=3)
    return RuntimeResult(text=text, variant="q4", finish_reason=finish, latency_ms=2.0, load_ms=0.0,
                         generation=generation, **fields)


def test_envelopes_of_bodies_and_chunks():
    chat = parse({"model": "smol", "messages": HI})
    chat.started = chat.arrived + 0.25
    body = responses.body(chat, _result())
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Paris"}
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7,
                             "prompt_tokens_details": {"cached_tokens": 3}}
    assert body["edgert"]["queue_ms"] == 250.0 and "text" not in body["edgert"]
    first = json.loads(responses.chunk(chat, text="Pa", first=True)[6:])
    assert first["object"] == "chat.completion.chunk" and first["choices"][0]["delta"] == {"role": "assistant",
                                                                                           "content": "Pa"}
    text = parse({"model": "smol", "prompt": "The capital"}, kind="completion", default_deadline_s=0.3)
    text.expired_at = text.arrived + 0.25  # given up just before its deadline
    expired = responses.body(text, None)  # the deadline passed in the queue
    assert expired["object"] == "text_completion" and expired["id"].startswith("cmpl-")
    assert expired["choices"][0] == {"index": 0, "logprobs": None, "finish_reason": "length", "text": ""}
    assert expired["edgert"]["deadline_cut"] and expired["edgert"]["deadline_met"]
    final = json.loads(responses.chunk(text, finish="length", final=True)[6:])
    assert final["usage"]["total_tokens"] == 0 and final["edgert"]["tokens_out"] == 0
    assert responses.finish_reason(_result(finish="deadline")) == "length"


def test_models_lists_the_bundle_then_its_variants():
    variant = SimpleNamespace(name="q4", format="gguf", quantization="Q4_1", size_bytes=10)
    listed = protocol.models("smol", [variant], 1)
    assert [m["id"] for m in listed] == ["smol", "q4"] and listed[0]["edgert"]["variants"] == ["q4"]


def test_the_protocol_imports_and_parses_without_fastapi():
    code = textwrap.dedent("""
        import sys
        sys.modules["fastapi"] = None  # import fastapi now raises ImportError
        from edgert.serve import protocol
        job = protocol.parse("chat", b'{"model": "m", "messages": [{"role": "user", "content": "hi"}],'
                             b' "deadline_ms": 500}', model_id="m", variants=[])
        assert job.request.deadline_s == 0.5 and job.request.prompt[0]["content"] == "hi"
        import edgert.serve.queue, edgert.serve.metrics  # the queue and the metrics need no FastAPI either
        assert "starlette" not in sys.modules
        try:
            import edgert.serve.app
        except Exception as exc:
            print(type(exc).__name__, exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("BackendUnavailableError") and "edgert[serve]" in out.stdout


def test_any_odd_value_of_any_field_is_a_4xx_never_a_crash():
    fields = ["model", "messages", "prompt", "stream", "n", "max_tokens", "max_completion_tokens", "temperature",
              "top_p", "seed", "stop", "deadline_ms", "strategy", "power_w", "energy_j", "samples", "think_tokens",
              "task_set", "answer_type", "ignore_eos"]
    odd = [True, "x", "", [1], [""], {"a": 1}, -1, 0, 1.5, float("inf"), float("nan")]
    for kind in ("chat", "completion"):
        for name in fields:
            for value in odd:
                for extra in ({}, {"strategy": "auto", "deadline_ms": 100}, {"strategy": "sc"}):
                    body = {"model": "smol", "messages": HI, "prompt": "p", **extra, name: value}
                    try:
                        parse(body, kind=kind, has_profile=kind == "chat")
                    except RequestError as exc:
                        assert 400 <= exc.status < 500, (name, value)


def test_a_client_names_task_sets_never_files():
    body = {"model": "smol", "messages": HI, "strategy": "greedy", "deadline_ms": 300}
    for name in ("arithmetic", "mine", "rg:chain_sum"):
        assert parse({**body, "task_set": name}, task_sets=["mine"]).request.task_set == name
    for name in ("../../etc/passwd", "/etc/hosts", "tasks.jsonl", "other"):
        with pytest.raises(RequestError) as caught:
            parse({**body, "task_set": name}, task_sets=["mine"])
        assert caught.value.status == 400 and caught.value.param == "task_set"


def test_structured_fields_become_the_request_constraint():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    job = parse({"model": "smol", "messages": HI, "response_format": {
        "type": "json_schema", "json_schema": {"name": "thing", "schema": schema, "strict": True}},
        "fallback": {"a": 0}, "logprobs": True, "top_logprobs": 2, "n": 2, "logit_bias": {"7": -100},
        "presence_penalty": 0.5})
    request = job.request
    assert request.constraint.kind == "json_schema" and request.constraint.name == "thing"
    assert request.fallback == '{"a": 0}' and request.top_logprobs == 2 and request.completions == 2
    assert request.logit_bias == {7: -100.0} and request.presence_penalty == 0.5 and job.logprobs
    assert not job.streams_tokens  # not streaming, and a fallback may replace the answer
    tools = parse({"model": "smol", "messages": HI, "tool_choice": "required", "tools": [
        {"type": "function", "function": {"name": "go", "parameters": schema}}]})
    assert tools.request.constraint.kind == "json_schema" and tools.request.tools[0]["function"]["name"] == "go"
    with pytest.raises(RequestError, match="cannot both"):
        parse({"model": "smol", "messages": HI, "tool_choice": "required", "response_format": {"type": "json_object"},
               "tools": [{"type": "function", "function": {"name": "go"}}]})


def test_tool_calls_and_fallbacks_in_responses():
    job = parse({"model": "smol", "messages": HI, "tool_choice": "required", "fallback": "none",
                 "tools": [{"type": "function", "function": {"name": "go"}}]})
    call = responses.body(job, _result('{"name":"go","arguments":{"x":1}}', constraint_satisfied=True,
                                       constraint="json_schema"))
    choice = call["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"]) == {"x": 1}
    flagged = responses.body(job, _result("none", constraint_satisfied=False, fallback_used=True,
                                          constraint="json_schema"))
    assert flagged["choices"][0]["message"]["content"] == "none" and flagged["choices"][0]["finish_reason"] == "stop"
    assert flagged["edgert"]["constraint"]["fallback_used"] is True
    queued = responses.body(job, None)  # expired in the queue: the fallback, flagged
    assert queued["choices"][0]["message"]["content"] == "none" and queued["edgert"]["constraint"]["satisfied"] is False


def test_strict_schemas_close_their_objects():
    from edgert.serve.structured import closed_objects

    schema = {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "integer"}}},
                                               "c": {"type": "array", "items": {"type": "object", "properties": {}}}},
              "$defs": {"d": {"type": "object", "properties": {"e": {}}, "additionalProperties": True}}}
    closed = closed_objects(schema)
    assert closed["additionalProperties"] is False
    assert closed["properties"]["a"]["additionalProperties"] is False
    assert closed["properties"]["c"]["items"]["additionalProperties"] is False
    assert closed["$defs"]["d"]["additionalProperties"] is True  # what the schema says stands
    assert "additionalProperties" not in schema  # the caller's schema is not changed
    strict = parse({"model": "smol", "messages": HI, "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}})
    assert strict.request.constraint.value["additionalProperties"] is False
    loose = parse({"model": "smol", "messages": HI, "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": schema}}})
    assert "additionalProperties" not in loose.request.constraint.value
