"""guard.load_body: every shape of bytes is either a JSON object within the limits or a
RequestError 400 saying what was expected and what was found (never RecursionError,
ValueError, UnicodeDecodeError); and the routes call it before protocol.parse."""

import json

import pytest

from edgert.serve.guard import MAX_DEPTH, MAX_ITEMS, load_body
from edgert.serve.protocol import RequestError

HI = '"messages": [{"role": "user", "content": "hi"}]'


@pytest.mark.parametrize("raw, fragment", [
    ('{"model": "smol", %s, "temperature": NaN}' % HI, "expected a finite number, found NaN"),
    ('{"model": "smol", %s, "top_p": -Infinity}' % HI, "found -Infinity"),
    ('{"stream_options": {"include_usage": Infinity}}', "found Infinity"),
    ('{"stream_options": {"x": 1e999}}', "finite numbers"),
    ('{"logit_bias": {"50256": -1E400}}', "finite numbers"),
    ('{"messages": ' + "[" * 5000 + "]" * 5000 + "}", f"at most {MAX_DEPTH} deep, found far deeper"),
    ('{"messages": ' + "[" * 200_000, "deep"),  # unterminated too: the depth is what it is refused for
    ('{"messages": ' + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "}",
     f"at most {MAX_DEPTH} deep, found deeper at $.messages"),
    ('{"strategy": ' + '{"a": ' * 40 + "1" + "}" * 40 + "}", "deep"),
    ('{"messages": [{"role": "user", "content": "\\ud800"}]}', "without lone surrogates at $.messages[0].content"),
    ('{"\\udfff": 1}', "lone surrogates at $ (a key)"),
    ('{"odd\\nkey \\u00e9": {"x": ' + "[" * 40 + "]" * 40 + "}}", 'deeper at $["odd\\nkey \\u00e9"].x[0]'),
    ('{"seed": ' + "1" * 5000 + "}", "an integer of at most"),
    ('{"x": [' + ",".join(["0"] * (MAX_ITEMS + 1)) + "]}", f"at most {MAX_ITEMS} values"),
    ("", "found an empty body"),
    ("  \n", "found an empty body"),
    ("[1, 2]", "found an array"),
    ("null", "found null"),
    ("true", "found true"),
    ('"text"', "found a string"),
    ("3.5", "found a number"),
    ('{"model": "smol",}', "line 1 column 18"),
    ("{not json", "must be JSON, found"),
    ('{"a": 1} {"b": 2}', "extra data"),
])
def test_refused_with_what_was_expected_and_found(raw, fragment):
    with pytest.raises(RequestError) as refused:
        load_body(raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw)
    err = refused.value
    assert err.status == 400 and err.kind == "invalid_request_error"
    assert fragment in err.message and "\n" not in err.message, err.message
    assert err.message.startswith("the request body must")


@pytest.mark.parametrize("raw, fragment", [
    (b"\xff\xfe{\x00}\x00", "found byte 0xff at offset 0"),
    ('{"model": "smol"}'.encode("utf-16"), "not UTF-8"),
    (b'{"content": "caf\xe9"}', "found byte 0xe9 at offset 16"),
    (b'{"content": "\xed\xa0\x80"}', "not UTF-8"),  # a surrogate encoded as UTF-8 is not UTF-8
])
def test_bytes_that_are_not_utf8_are_a_400(raw, fragment):
    with pytest.raises(RequestError) as refused:
        load_body(raw)
    assert refused.value.status == 400 and fragment in refused.value.message, refused.value.message


@pytest.mark.parametrize("raw, expected", [
    (b'{"model": "smol"}', {"model": "smol"}),
    (b'\xef\xbb\xbf{"model": "smol"}', {"model": "smol"}),  # a byte order mark is ignored (RFC 8259)
    (b'{"seed": 18446744073709551616, "t": 1e308, "u": 4.9e-324, "v": -0.0, "w": 1e-400}',
     {"seed": 2 ** 64, "t": 1e308, "u": 5e-324, "v": -0.0, "w": 0.0}),
    (b'{"content": "\\ud83d\\ude00 caf\\u00e9"}', {"content": "\U0001F600 caf\u00e9"}),  # a surrogate pair is fine
    (('{"messages": ' + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "}").encode(), None),  # exactly the limit
    (('{"x": [' + ",".join(["0"] * (MAX_ITEMS - 1)) + "]}").encode(), None),
])
def test_bodies_within_the_limits_are_returned(raw, expected):
    body = load_body(raw)
    assert isinstance(body, dict)
    if expected is not None:
        assert body == expected
    assert body == json.loads(raw.decode("utf-8-sig"))  # what parse reads again


def test_a_body_that_is_nothing_but_open_brackets_is_a_400_not_a_recursion_error():
    for opener in (b"[", b"{", b'{"a":'):
        with pytest.raises(RequestError) as refused:
            load_body(opener * 1_000_000)
        assert refused.value.status == 400


def test_the_routes_guard_the_body_before_parsing_it():
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient
    from test_security import StandInRuntime

    from edgert.serve.app import create_app
    from edgert.serve.queue import Server

    server = Server(StandInRuntime(), model_id="smol")
    try:
        client = TestClient(create_app(server))
        for path in ("/v1/chat/completions", "/v1/completions"):
            nan = client.post(path, content=b'{"model": "smol", "prompt": "x", "temperature": NaN}')
            assert nan.status_code == 400 and "found NaN" in nan.json()["error"]["message"]
            deep = client.post(path, content=b'{"model": "smol", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
            assert deep.status_code == 400 and "deep" in deep.json()["error"]["message"]
    finally:
        server.close()
