"""edgert serve: the OpenAI-compatible server on the real SmolLM2 bundle, driven by the official
openai client (plain and streaming, with edgert's extension fields) and by raw HTTP for the
error cases, the queue and client disconnects."""

import http.client
import json
import re
import socket
import threading
import time

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
import uvicorn  # noqa: E402

from edgert.runtime import Runtime  # noqa: E402
from edgert.serve.app import create_app  # noqa: E402
from edgert.serve.queue import Server  # noqa: E402
from test_runtime_adaptive import calibrated_copy, synthetic_profile_for  # noqa: E402

pytestmark = pytest.mark.slow
QUESTION = "Sam has 5 marbles and finds 3 more. How many marbles does Sam have?"


class Running:
    """A uvicorn server in a background thread, on a free loopback port."""

    def __init__(self, server: Server):
        self.server = server
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        config = uvicorn.Config(create_app(server), host="127.0.0.1", port=self.port, log_level="error")
        self.uvicorn = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.uvicorn.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.uvicorn.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        self.base = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.uvicorn.should_exit = True
        self.thread.join(10)
        self.server.close()

    def raw(self, method: str, path: str, body=None, headers=None):
        """(status, headers, parsed JSON or text) of one request over a fresh connection."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
        conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        text = resp.read().decode()
        conn.close()
        try:
            return resp.status, dict(resp.getheaders()), json.loads(text)
        except ValueError:
            return resp.status, dict(resp.getheaders()), text

    def metric(self, name: str) -> float:
        _status, _headers, text = self.raw("GET", "/metrics")
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total


def serving(runtime: Runtime, **server_options):
    """A generator for a module fixture: ``runtime`` served on loopback, stopped and closed after."""
    runtime.preload()
    running = Running(Server(runtime, queue_size=2, model_id="smol", **server_options))
    yield running
    running.stop()
    runtime.close()


@pytest.fixture(scope="module")
def served(smollm2_bundle, tmp_path_factory):
    """The SmolLM2 bundle with a small accuracy table and a synthetic profile, served."""
    root = calibrated_copy(smollm2_bundle, tmp_path_factory.mktemp("serve") / "bundle",
                           [("greedy", 1, 0, 16, 40), ("greedy", 1, 0, 48, 45), ("sc", 3, 0, 32, 55)])
    yield from serving(Runtime(root, profile=synthetic_profile_for(root), n_threads=2))


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served.base + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_models_and_health(served, client):
    ids = [m.id for m in client.models.list().data]
    assert ids[0] == "smol" and len(ids) == 2  # the bundle, then its one variant
    status, _h, health = served.raw("GET", "/health")
    assert status == 200 and health["status"] == "ok" and health["loaded"]


def test_chat_completion_plain_with_deadline(served, client):
    r = client.chat.completions.create(model="smol", messages=[{"role": "user", "content": "Name a color."}],
                                       max_tokens=12, extra_body={"deadline_ms": 5000})
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content.strip()
    assert r.usage.completion_tokens > 0 and r.usage.prompt_tokens > 0
    telemetry = r.model_extra["edgert"]
    assert telemetry["deadline_met"] is True and telemetry["deadline_s"] == 5.0
    assert telemetry["latency_ms"] <= 5000 and telemetry["queue_ms"] >= 0
    assert telemetry["tokens_out"] == r.usage.completion_tokens


def test_chat_streaming_matches_plain(served, client):
    messages = [{"role": "user", "content": "Count from one to five."}]
    plain = client.chat.completions.create(model="smol", messages=messages, max_tokens=24)
    stream = client.chat.completions.create(model="smol", messages=messages, max_tokens=24, stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) > 3  # tokens arrive one chunk at a time
    assert text == plain.choices[0].message.content  # greedy: same text either way
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].model_extra["edgert"]["tokens_out"] == plain.usage.completion_tokens


def test_completions_plain_and_streaming(served, client):
    r = client.completions.create(model="smol", prompt="The capital of France is", max_tokens=8)
    assert r.choices[0].text and r.object == "text_completion"
    parts = list(client.completions.create(model="smol", prompt="The capital of France is", max_tokens=8, stream=True))
    assert "".join(p.choices[0].text for p in parts) == r.choices[0].text


def test_strategy_auto_with_power_limit_and_planner_choice(served, client):
    r = client.chat.completions.create(
        model="smol", messages=[{"role": "user", "content": QUESTION}],
        extra_body={"deadline_ms": 20000, "strategy": "auto", "task_set": "arithmetic", "power_w": 15})
    e = r.model_extra["edgert"]
    assert e["config"]["strategy"] == "sc" and e["plan"]["feasible"]  # the most accurate row fits 20 s
    assert e["threads"] == 1  # 15 W is below the 2-thread estimate of 20 W: the planner took one thread
    assert e["deadline_met"] and e["answer"] is not None and e["energy_provenance"] == "estimated"
    # streaming a strategy: the voted answer arrives as one chunk, then the telemetry
    chunks = list(client.chat.completions.create(
        model="smol", messages=[{"role": "user", "content": QUESTION}], stream=True,
        extra_body={"deadline_ms": 20000, "strategy": "greedy", "answer_type": "number"}))
    assert chunks[-1].model_extra["edgert"]["config"]["strategy"] == "greedy"


@pytest.mark.parametrize("body, status, param", [
    (b"{not json", 400, None),
    ([1, 2], 400, None),
    ({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}, 404, "model"),
    ({"model": "smol", "messages": []}, 400, "messages"),
    ({"model": "smol", "messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages"),
    ({"model": "smol", "messages": [{"role": "user", "content": "hi"}], "deadline_ms": -5}, 400, "deadline_ms"),
    ({"model": "smol", "messages": [{"role": "user", "content": "hi"}], "deadline_ms": "soon"}, 400, "deadline_ms"),
    ({"model": "smol", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, 400, "max_tokens"),
    ({"model": "smol", "messages": [{"role": "user", "content": "hi"}], "temperature": 9}, 400, "temperature"),
    ({"model": "smol", "messages": [{"role": "user", "content": "hi"}], "strategy": "magic"}, 400, "strategy"),
    ({"model": "smol", "messages": [{"role": "user", "content": "hi"}], "strategy": "auto"}, 400, "deadline_ms"),
    ({"model": "smol", "messages": [{"role": "user", "content": "hi"}], "n": 9}, 400, "n"),
    ({"model": "smol", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}, 400, "stream"),
    ({"model": "smol", "prompt": ""}, 400, "prompt"),
])
def test_bad_requests_get_a_4xx_json_error(served, body, status, param):
    path = "/v1/completions" if isinstance(body, dict) and "prompt" in body else "/v1/chat/completions"
    got, _headers, data = served.raw("POST", path, body)
    assert got == status, data
    assert isinstance(data, dict) and data["error"]["message"] and data["error"]["param"] == param


@pytest.mark.parametrize("stream", [False, True])
def test_prompt_longer_than_the_context_is_a_400(served, stream):
    long_prompt = "word " * 5000  # the server's context holds 2048 tokens
    got, _h, data = served.raw("POST", "/v1/completions", {"model": "smol", "prompt": long_prompt, "stream": stream})
    assert got == 400 and "context holds" in data["error"]["message"]


def test_an_oversized_body_is_a_413_without_buffering_it(served):
    from edgert.serve.app import MAX_BODY_BYTES

    got, _h, data = served.raw("POST", "/v1/completions", b"x" * (MAX_BODY_BYTES + 1))
    assert got == 413 and "at most" in data["error"]["message"]


def test_unknown_path_and_method_are_json_4xx(served):
    assert served.raw("GET", "/v1/nothing")[0] == 404
    status, _h, data = served.raw("GET", "/v1/chat/completions")
    assert status == 405 and data["error"]["message"]


def test_metrics_are_prometheus_text_and_count_requests(served, client):
    before = served.metric("edgert_deadline_total")
    client.chat.completions.create(model="smol", messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
                                   extra_body={"deadline_ms": 4000})
    _s, headers, text = served.raw("GET", "/metrics")
    assert headers["content-type"].startswith("text/plain")
    sample = re.compile(r'^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?[0-9.e+]+$')
    for line in text.splitlines():
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or sample.match(line), line
    assert served.metric("edgert_deadline_total") == before + 1
    assert served.metric("edgert_tokens_generated_total") > 0 and served.metric("edgert_tokens_per_second") > 0
    assert 'edgert_requests_total{endpoint="/v1/chat/completions",code="200"}' in text


def _open_stream(port: int, max_tokens: int, deadline_ms=None) -> socket.socket:
    """A streaming request that would run for many seconds (EOS ignored); returns the socket
    after the response has started."""
    body = {"model": "smol", "prompt": "Once upon a time", "max_tokens": max_tokens, "stream": True,
            "ignore_eos": True}
    if deadline_ms:
        body["deadline_ms"] = deadline_ms
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return sock


def test_a_disconnect_stops_the_generation(served):
    cancelled = served.metric("edgert_cancelled_total")
    tokens = served.metric("edgert_tokens_generated_total")
    sock = _open_stream(served.port, max_tokens=1500)  # ~15 s of decoding if nobody stopped it
    assert b"200 OK" in sock.recv(4096)
    assert b"data:" in sock.recv(4096)  # tokens are flowing
    sock.close()
    start = time.monotonic()
    while served.metric("edgert_cancelled_total") == cancelled:
        assert time.monotonic() - start < 5, "generation was not cancelled within 5 s of the disconnect"
        time.sleep(0.05)
    assert served.metric("edgert_running") == 0
    assert served.metric("edgert_tokens_generated_total") - tokens < 1000  # stopped well short of 1500


def test_full_queue_gets_503_with_retry_after_and_queue_time_counts(served):
    """One request runs and two wait (queue_size=2); a fourth is refused. The waiting ones'
    deadlines count from their arrival, so they end by it even though they started late."""
    socks = [_open_stream(served.port, max_tokens=300, deadline_ms=3000)]
    assert b"200 OK" in socks[0].recv(4096)
    results = []

    def waiting():
        status, _h, data = served.raw("POST", "/v1/completions", {
            "model": "smol", "prompt": "Once upon a time", "max_tokens": 300, "ignore_eos": True, "deadline_ms": 3000})
        results.append((status, data))

    threads = [threading.Thread(target=waiting) for _ in range(2)]
    for t in threads:
        t.start()
    start = time.monotonic()
    while served.metric("edgert_queue_depth") < 2:
        assert time.monotonic() - start < 5
        time.sleep(0.02)
    status, headers, data = served.raw("POST", "/v1/completions", {"model": "smol", "prompt": "hi", "max_tokens": 2})
    assert status == 503 and int(headers["retry-after"]) >= 1 and data["error"]["code"] == "queue_full"
    for t in threads:
        t.join(30)
    for s in socks:
        s.close()
    assert [r[0] for r in results] == [200, 200]
    for _status, body in results:
        e = body["edgert"]
        assert e["queue_ms"] > 0 and e["deadline_met"] is True  # latency counts from arrival: within 3 s
        assert e["latency_ms"] <= 3000 + 50


def test_chat_client_example_talks_to_the_server(served):
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "chat_client.py"
    out = subprocess.run([sys.executable, str(example), "--url", served.base + "/v1", "--once", "Say hello.",
                          "--deadline-ms", "5000", "--max-tokens", "16"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("smol> ") and len(out.stdout.strip()) > len("smol>")
    assert "deadline met" in out.stderr
    # no server there: one clear line, exit 2
    gone = subprocess.run([sys.executable, str(example), "--url", "http://127.0.0.1:9/v1", "--once", "hi"],
                          capture_output=True, text=True, timeout=60)
    assert gone.returncode == 2 and "no edgert server" in gone.stderr


def test_a_stream_whose_deadline_passes_in_the_queue_is_answered_empty_at_its_deadline(served):
    busy = _open_stream(served.port, max_tokens=300, deadline_ms=3000)  # holds the runtime for ~3 s
    assert b"200 OK" in busy.recv(4096)
    start = time.monotonic()
    status, _h, text = served.raw("POST", "/v1/completions", {"model": "smol", "prompt": "hi", "stream": True,
                                                             "deadline_ms": 300})
    waited_ms = (time.monotonic() - start) * 1000
    busy.close()
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    assert status == 200 and text.rstrip().endswith("data: [DONE]")
    final = events[-1]
    assert final["choices"][0]["finish_reason"] == "length"
    assert final["edgert"]["deadline_cut"] and final["edgert"]["tokens_out"] == 0
    assert final["edgert"]["deadline_met"] and waited_ms < 300 + 200  # answered at its deadline, not after the other
