"""Property: no request body, of any shape, gets a 5xx from edgert serve.

Hypothesis sends at least 1,000 bodies to the real ASGI app (starlette's TestClient) around
the real SmolLM2 bundle with a device profile (so strategy auto, power_w and energy_j reach
the planner): wrong types for every field edgert or OpenAI knows, deep nesting, NaN /
Infinity / 1e999, integers too long for int(), lone surrogates, huge strings, bytes that are
not JSON or not UTF-8, top-level values that are not objects, mutations of valid bodies,
and valid bodies (small max_tokens, a deadline, so the ones that reach the model stay fast).
Every answer must be below 500 and, when an error, OpenAI's error object; no stream may carry
a server error; afterwards a good request still gets its 200.
"""

import json
import time

import pytest

pytest.importorskip("fastapi")
hypothesis = pytest.importorskip("hypothesis")
from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from edgert.runtime import Runtime  # noqa: E402
from edgert.serve import fields  # noqa: E402
from edgert.serve.app import MAX_BODY_BYTES, create_app  # noqa: E402
from edgert.serve.queue import Server  # noqa: E402
from test_runtime_adaptive import calibrated_copy, synthetic_profile_for  # noqa: E402

pytestmark = pytest.mark.slow

CHAT, COMPLETION = "/v1/chat/completions", "/v1/completions"
#: every field of a completion request that OpenAI or edgert knows (the protocol's own lists, and a fixed one)
FIELDS = tuple(sorted(set(fields.OPENAI_FIELDS) | set(fields.EDGERT_FIELDS) | {
    "model", "messages", "prompt", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "stream",
    "stream_options", "stop", "seed", "response_format", "tools", "tool_choice", "parallel_tool_calls", "functions",
    "function_call", "logprobs", "top_logprobs", "echo", "best_of", "suffix", "presence_penalty", "frequency_penalty",
    "logit_bias", "user", "metadata", "store", "service_tier", "modalities", "reasoning_effort", "deadline_ms",
    "power_w", "energy_j", "strategy", "samples", "think_tokens", "task_set", "answer_type", "ignore_eos",
    "fallback"}))
SCHEMA_KEYS = ("type", "properties", "items", "required", "enum", "const", "anyOf", "oneOf", "allOf", "not", "$ref",
               "$defs", "definitions", "pattern", "format", "minimum", "maximum", "exclusiveMinimum", "multipleOf",
               "minLength", "maxLength", "minItems", "maxItems", "uniqueItems", "additionalProperties",
               "patternProperties", "prefixItems", "if", "then", "else", "description", "default", "title")
SCHEMA_TYPES = ("object", "string", "integer", "number", "boolean", "null", "array")
#: what a JSON body can hold that json.dumps cannot write: placed as raw text
RAW_VALUES = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1E400", "1" * 5000, "-" + "9" * 4400,
              "1" * 400, "0." + "0" * 400 + "1", "1e-400", '"\\ud800"', '"a\\udfffb"', '{"\\udc00": 1}',
              "[" * 100 + "]" * 100, "[" * 5000 + "]" * 5000, "[" * 200000, '{"a":' * 40 + "1" + "}" * 40,
              '{"a":' * 3000 + "1" + "}" * 3000, "[" + ",".join(["0"] * 120_000) + "]",
              '"' + "x" * 300_000 + '"', "9223372036854775808", "-9223372036854775809", "18446744073709551616",
              "-0", "-0.0", "1.0e+308", "4.9e-324", "1e-320"]
_RAW = "\u0000raw{}\u0000"
#: model names the server answers to; the fixture adds the bundle's variant
MODELS = ["smol"]


class Raw:
    """A value written into the body as this JSON text, as is."""

    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return f"Raw({self.text[:60]!r}{'...' if len(self.text) > 60 else ''})"


def dumps(body) -> bytes:
    """JSON text of ``body`` with each Raw placed verbatim (NaN etc. as Python writes them)."""
    raws = []

    def place(value):
        if isinstance(value, Raw):
            raws.append(value.text)
            return _RAW.format(len(raws) - 1)
        if isinstance(value, dict):
            return {k: place(v) for k, v in value.items()}
        if isinstance(value, list):
            return [place(v) for v in value]
        return value

    text = json.dumps(place(body))
    for i, raw in enumerate(raws):
        text = text.replace(json.dumps(_RAW.format(i)), raw)
    return text.encode("utf-8", "surrogatepass")


scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10 ** 30), max_value=10 ** 30)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30)
           | st.sampled_from(["", "auto", "greedy", "sc", "esc", "bon", "bf", "smol", "user", "assistant", "tool",
                              "text", "number", "regex", "choice", "arithmetic", "facts", "rg:mix", "json_object",
                              "json_schema", "none", "required", "function", "\x00", "\ud800", "\u202e", "a" * 5000,
                              "../../../etc/hostname", "{", "[", "^(a+)+$", "(", "*"])
           | st.sampled_from(RAW_VALUES).map(Raw)
           | st.integers(min_value=10_000, max_value=400_000).map(lambda n: "y" * n))
values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=4)
                      | st.dictionaries(st.sampled_from(FIELDS + SCHEMA_KEYS) | st.text(max_size=8), kids, max_size=4),
                      max_leaves=12)
texts = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)
names = st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True)
#: JSON schemas: mostly sensible, some of any shape at all
schemas = st.recursive(
    st.sampled_from(SCHEMA_TYPES).map(lambda t: {"type": t}) | st.just({}),
    lambda kids: st.one_of(
        st.dictionaries(names, kids, min_size=1, max_size=3).map(
            lambda props: {"type": "object", "properties": props, "required": sorted(props)[:1]}),
        kids.map(lambda item: {"type": "array", "items": item, "maxItems": 2}),
        st.lists(kids, min_size=1, max_size=3).map(lambda alts: {"anyOf": alts}),
        st.lists(st.text(max_size=5) | st.integers(), min_size=1, max_size=4).map(lambda e: {"enum": e}),
        st.dictionaries(st.sampled_from(SCHEMA_KEYS), kids | values, max_size=4),
    ), max_leaves=8)


def _models():
    return st.sampled_from(MODELS)


def tool(name, parameters):
    return {"type": "function", "function": {"name": name, "description": "a tool", "parameters": parameters}}


@st.composite
def valid_bodies(draw):
    """A body the server should answer 200 to, kept cheap: at most 4 tokens, a short deadline."""
    path = draw(st.sampled_from([CHAT, COMPLETION]))
    body = {"model": draw(st.deferred(_models))}
    if path == CHAT:
        history = draw(st.lists(st.builds(lambda role, text: {"role": role, "content": text},
                                          st.sampled_from(["system", "user", "assistant", "developer"]), texts),
                                max_size=2))
        if draw(st.booleans()):  # an earlier tool call and its result
            history += [{"role": "assistant", "content": draw(st.none() | texts), "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f0", "arguments": '{"x": 1}'}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": draw(texts)}]
        part = st.builds(lambda text: [{"type": "text", "text": text}], texts)
        body["messages"] = history + [{"role": "user", "content": draw(texts | part)}]
    else:
        body["prompt"] = draw(texts | texts.map(lambda t: [t]))
    body[draw(st.sampled_from(["max_tokens", "max_completion_tokens"]))] = draw(st.integers(1, 4))
    optional = {
        "temperature": st.floats(0, 2), "top_p": st.floats(0.01, 1), "seed": st.integers(0, 2 ** 31 - 1),
        "stop": texts | st.lists(texts, max_size=2), "stream": st.booleans(), "ignore_eos": st.booleans(),
        "deadline_ms": st.integers(50, 250), "n": st.integers(1, 2), "user": texts,
        "presence_penalty": st.floats(-2, 2), "frequency_penalty": st.floats(-2, 2),
        "logit_bias": st.dictionaries(st.integers(0, 49151).map(str), st.floats(-100, 100), max_size=3),
        "metadata": st.dictionaries(names, texts, max_size=2), "fallback": values,
    }
    for name in draw(st.sets(st.sampled_from(sorted(optional)))):
        body[name] = draw(optional[name])
    if body.get("stream") and draw(st.booleans()):
        body["stream_options"] = {"include_usage": draw(st.booleans())}
    if draw(st.booleans()):
        body["logprobs"] = True
        if draw(st.booleans()):
            body["top_logprobs"] = draw(st.integers(0, 20))
    if path == CHAT:
        shape = draw(st.sampled_from([None, None, "text", "json_object", "json_schema", "tools"]))
        if shape in ("text", "json_object"):
            body["response_format"] = {"type": shape}
        elif shape == "json_schema":
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": draw(names), "strict": draw(st.booleans()), "schema": draw(schemas)}}
        elif shape == "tools":
            tools = [tool(f"f{i}", draw(schemas)) for i in range(draw(st.integers(1, 2)))]
            body["tools"] = tools
            choice = draw(st.sampled_from([None, "none", "auto", "required", "named"]))
            if choice == "named":
                body["tool_choice"] = {"type": "function", "function": {"name": draw(st.sampled_from(["f0", "f1"]))}}
            elif choice is not None:
                body["tool_choice"] = choice
            if draw(st.booleans()):
                body["parallel_tool_calls"] = draw(st.booleans())
    strategy = draw(st.sampled_from([None, None, None, "greedy", "sc", "esc", "bon", "bf", "auto"]))
    if strategy is not None:
        body["strategy"] = strategy
        body["deadline_ms"] = draw(st.integers(50, 250))
        if strategy in ("sc", "esc", "bon"):
            body["samples"] = draw(st.integers(1, 2))
        if draw(st.booleans()):
            body["think_tokens"] = draw(st.integers(1, 4))
        if draw(st.booleans()):
            body["answer_type"] = draw(st.sampled_from(["number", "choice", "text"]))
        if draw(st.booleans()):
            body["task_set"] = draw(st.sampled_from(["arithmetic", "facts"]))
        if strategy == "auto" and draw(st.booleans()):
            body[draw(st.sampled_from(["power_w", "energy_j"]))] = draw(st.floats(0.5, 100))
    return path, body


@st.composite
def wrong_fields(draw):
    """A valid body with one to three fields set to anything at all."""
    path, body = draw(valid_bodies())
    for name in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3)):
        body[name] = draw(values | schemas)
    return path, dumps(body)


@st.composite
def wrong_inside(draw):
    """A valid body with one value somewhere inside it (a message, a schema, a tool) replaced."""
    path, body = draw(valid_bodies())
    spots = []

    def collect(value, trail):
        if isinstance(value, dict):
            for k, v in value.items():
                spots.append(trail + [k])
                collect(v, trail + [k])
        elif isinstance(value, list):
            for i, v in enumerate(value):
                spots.append(trail + [i])
                collect(v, trail + [i])

    collect(body, [])
    trail = draw(st.sampled_from(spots))
    holder = body
    for step in trail[:-1]:
        holder = holder[step]
    if draw(st.booleans()) or isinstance(holder, list):
        holder[trail[-1]] = draw(values | schemas)
    else:
        del holder[trail[-1]]
    return path, dumps(body)


@st.composite
def anything_goes(draw):
    """An object of known (and a few unknown) keys with any values, over a model and prompt half the time."""
    base = draw(st.sampled_from([{}, {"model": "smol"}, {"model": "smol", "prompt": "hi", "max_tokens": 2},
                                 {"model": "smol", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}]))
    extra = draw(st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=10), values | schemas, max_size=6))
    return draw(st.sampled_from([CHAT, COMPLETION])), dumps({**base, **extra})


@st.composite
def mutated(draw):
    """The bytes of a valid body cut, spliced, overwritten or wrapped."""
    path, body = draw(valid_bodies())
    raw = dumps(body)
    at = draw(st.integers(0, len(raw)))
    how = draw(st.sampled_from(["truncate", "delete", "insert", "replace", "wrap", "nest", "duplicate"]))
    junk = draw(st.binary(min_size=1, max_size=8) | st.sampled_from([b"NaN", b"1e999", b"[", b"{", b'"', b"\\",
                                                                     b"\xff", b"\xed\xa0\x80", b"\x00", b",", b":"]))
    if how == "truncate":
        raw = raw[:at]
    elif how == "delete":
        raw = raw[:at] + raw[at + draw(st.integers(1, 8)):]
    elif how == "insert":
        raw = raw[:at] + junk + raw[at:]
    elif how == "replace":
        raw = raw[:at] + junk + raw[at + len(junk):]
    elif how == "wrap":
        raw = draw(st.sampled_from([b"[%s]", b'{"body": %s}', b"%s%s", b" \n\t%s \n", b"\xef\xbb\xbf%s",
                                    b"%s garbage"])).replace(b"%s", raw)
    elif how == "nest":
        depth = draw(st.integers(1, 3000))
        key = draw(st.sampled_from(["messages", "stream_options", "strategy", "response_format", "tools", "stop",
                                    "logit_bias", "fallback", "metadata"]))
        raw = dumps({**body, key: Raw("[" * depth + "{}" + "]" * depth)})
    else:  # a key twice: the last one wins in json.loads
        raw = raw[:-1] + b', "' + draw(st.sampled_from(FIELDS)).encode() + b'": ' + dumps(draw(values)) + b"}"
    return path, raw


junk_bodies = st.tuples(st.sampled_from([CHAT, COMPLETION]), st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    values.map(dumps),  # any JSON, mostly not an object
    st.sampled_from(RAW_VALUES).map(str.encode),
    st.sampled_from([b"", b" ", b"null", b"{}", b"[]", b'""', b"\xef\xbb\xbf{}", b"\xff\xfe{\x00}\x00",
                     "{\"model\": \"smol\"}".encode("utf-16"), b"{" * 100_000, b"[" * 900_000,
                     b"x" * (MAX_BODY_BYTES + 1)]),
))
bodies = st.one_of(wrong_fields(), wrong_inside(), anything_goes(), mutated(), junk_bodies,
                   valid_bodies().map(lambda p: (p[0], dumps(p[1]))))


@pytest.fixture(scope="module")
def client(smollm2_bundle, tmp_path_factory):
    """The real app around the SmolLM2 bundle, with a profile and a 0.25 s default deadline."""
    root = calibrated_copy(smollm2_bundle, tmp_path_factory.mktemp("fuzz") / "bundle",
                           [("greedy", 1, 0, 4, 40), ("sc", 2, 0, 4, 45), ("bf", 1, 4, 4, 50)])
    runtime = Runtime(root, profile=synthetic_profile_for(root), n_threads=2, n_ctx=512)
    runtime.preload()
    server = Server(runtime, queue_size=2, model_id="smol", default_deadline_s=0.25)
    MODELS[1:] = [v.name for v in runtime.bundle.variants]
    with TestClient(create_app(server)) as test_client:  # server exceptions are raised here, with their traceback
        yield test_client
    server.close()
    runtime.close()


def check_answer(response, sent: bytes) -> None:
    shown = sent[:300]
    assert response.status_code < 500, (response.status_code, response.text[:2000], shown)
    if response.status_code >= 400:
        error = response.json()["error"]
        assert isinstance(error["message"], str) and error["message"], (response.text[:500], shown)
        assert "\n" not in error["message"].strip(), error["message"][:500]
    elif response.headers["content-type"].startswith("text/event-stream"):
        assert response.text.rstrip().endswith("data: [DONE]"), (response.text[-500:], shown)
        events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")]
        assert events and not [e for e in events if "error" in e], (response.text[-2000:], shown)
    else:
        assert response.json()["choices"], response.text[:500]


def test_no_body_gets_a_5xx_and_the_server_keeps_answering(client):
    seen = {"statuses": {}, "started": time.monotonic()}

    @settings(max_examples=1000, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(bodies)
    def no_5xx(case):
        path, raw = case
        response = client.post(path, content=raw, headers={"Content-Type": "application/json"})
        seen["statuses"][response.status_code] = seen["statuses"].get(response.status_code, 0) + 1
        check_answer(response, raw)

    no_5xx()
    elapsed = time.monotonic() - seen["started"]
    statuses = seen["statuses"]
    assert sum(statuses.values()) >= 1000, statuses
    assert statuses.get(200, 0) >= 20 and statuses.get(400, 0) >= 200, statuses  # both kinds were exercised
    # afterwards a good request still gets its 200, and nothing was counted as a 5xx
    good = client.post(CHAT, json={"model": "smol", "messages": [{"role": "user", "content": "Say hi."}],
                                   "max_tokens": 4})
    assert good.status_code == 200 and good.json()["choices"][0]["message"]["role"] == "assistant", good.text
    metrics = client.get("/metrics").text
    assert 'code="5' not in metrics, [line for line in metrics.splitlines() if 'code="5' in line]
    print(f"\nfuzz: {sum(statuses.values())} bodies in {elapsed:.1f} s, statuses {dict(sorted(statuses.items()))}")
