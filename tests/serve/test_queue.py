"""The Server without HTTP or a model: the preload policy, admission (503 with Retry-After),
expiry of a job whose deadline passes in the queue, and the Request handed to the runtime."""

import json
from types import SimpleNamespace

import pytest

from edgert.serve.protocol import RequestError
from edgert.serve.queue import Server, expires_at


class FakeRuntime:
    def __init__(self, profile=None):
        variants = [SimpleNamespace(name="q4", format="gguf", quantization="Q4_1", size_bytes=1)]
        self.bundle = SimpleNamespace(variants=variants, manifest=SimpleNamespace(model_name="smol", accuracy_table=[]))
        self.profile, self.default_variant = profile, "q4"
        self.preloaded, self.requests = [], []

    def preload(self, variants=None, constraints=False):
        self.preloaded.append(variants)
        self.constraints = constraints
        return {"q4": 1.0}

    def run(self, request, *, on_token=None, cancel_token=None):
        self.requests.append((request, cancel_token))
        return None


def _body(**extra) -> bytes:
    return json.dumps({"model": "smol", "messages": [{"role": "user", "content": "hi"}], **extra}).encode()


def test_preload_loads_every_variant_only_when_the_planner_may_choose():
    plain = FakeRuntime()
    Server(plain).preload()
    planned = FakeRuntime(profile=object())
    Server(planned).preload()
    assert plain.preloaded == [["q4"]] and planned.preloaded == [None]  # None: all calibrated variants
    assert plain.constraints and planned.constraints  # response_format and tools need the tokenizers at once


def test_a_full_queue_refuses_with_503_and_retry_after():
    server = Server(FakeRuntime(), queue_size=1)
    server.admit(server.parse("chat", _body()))
    server.admit(server.parse("chat", _body()))
    with pytest.raises(RequestError) as caught:
        server.admit(server.parse("chat", _body()))
    assert caught.value.status == 503 and caught.value.code == "queue_full"
    assert int(caught.value.headers["Retry-After"]) >= 1 and server.queue_depth() == (2, 0)
    with pytest.raises(Exception):
        Server(FakeRuntime(), queue_size=-1)


def test_the_worker_runs_the_request_and_skips_an_expired_job():
    runtime = FakeRuntime()
    server = Server(runtime, default_deadline_s=2.0)
    job = server.parse("chat", _body())
    server.admit(job)
    assert expires_at(job) < job.arrived + 2.0
    server._run(job)
    request, cancel = runtime.requests[0]
    assert request is job.request and cancel is job.cancel and request.deadline_s == 2.0
    late = server.parse("chat", _body(deadline_ms=100))
    server.admit(late)
    assert server.expire(late) and late.cancel.cancelled
    assert server._run(late) is None and len(runtime.requests) == 1 and server.queue_depth() == (0, 0)
    assert 'edgert_deadline_total{result="met"} 1' in server.metrics.render(0, 0)
    server.close()
