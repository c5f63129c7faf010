"""A local OpenAI-compatible HTTP server around the Runtime, with deadlines and power limits.

Endpoints: ``POST /v1/chat/completions`` and ``POST /v1/completions`` (plain JSON or
server-sent events with ``"stream": true``), ``GET /v1/models``, ``GET /health`` and
``GET /metrics`` (Prometheus text format).

What edgert adds to the OpenAI request body (the official client sends these through
``extra_body``):

- ``deadline_ms``: answer within this many milliseconds of the request's arrival; time spent
  waiting in the queue counts. The answer may be cut short, never late.
- ``power_w``, ``energy_j``: limits for the planner (they imply ``strategy: "auto"``).
- ``strategy``: ``auto`` (the planner chooses variant, strategy, N and budgets), or one of
  ``greedy``, ``sc``, ``esc``, ``bon``, ``bf``; omitted: plain generation with the sampling
  settings given.
- ``task_set``, ``answer_type``, ``think_tokens``, ``samples`` (N for sc / esc / bon),
  ``ignore_eos`` (as in llama.cpp's server).

Every response carries an ``edgert`` object: the configuration chosen, the plan, latency,
queue time, tokens, energy (measured or estimated) and whether the deadline was met.

One request runs at a time (the runtime owns the CPU); up to ``queue_size`` more wait in a
FIFO. A full queue answers 503 with ``Retry-After``. A client that disconnects cancels its
request, whether it is waiting or running. Bad requests get a 4xx with an OpenAI-style JSON
error body, never a 500.

FastAPI and uvicorn come with ``pip install edgert[serve]``; this module imports them, so
import it only when serving (the CLI does so lazily).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import threading
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, List, Optional, Tuple

from .errors import DeadlineError, EdgertError, UsageError
from .runners.types import RETURN_MARGIN_S, CancelToken
from .result import RuntimeResult
from .runtime import Runtime
from .strategies import Strategy

try:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from .errors import BackendUnavailableError

    raise BackendUnavailableError("edgert serve is unavailable: install edgert[serve] (fastapi, uvicorn)") from exc

DEFAULT_QUEUE_SIZE = 4
#: largest request body read (a 2048-token context is a few kB of text; this leaves room for
#: long message histories while a runaway client cannot make the server buffer gigabytes)
MAX_BODY_BYTES = 8 << 20
DISCONNECT_POLL_S = 0.05
#: the runtime's finish reasons as OpenAI's (the runtime's own stays in edgert.finish_reason)
_FINISH = {"stop": "stop", "length": "length", "deadline": "length"}
LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class RequestError(Exception):
    """A request the server refuses: HTTP status, OpenAI error type and the offending field."""

    def __init__(self, status: int, message: str, *, param: Optional[str] = None, code: Optional[str] = None,
                 kind: str = "invalid_request_error", headers: Optional[Dict[str, str]] = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


# ---------------------------------------------------------------------------- parsing
def _number(body: Dict[str, Any], name: str, *, low: float = -math.inf, high: float = math.inf,
            integer: bool = False, positive: bool = False) -> Optional[float]:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        kind = "an integer" if integer else "a number"
        raise RequestError(400, f"{name} must be {kind}, found {value!r}", param=name)
    if not math.isfinite(value) or value < low or value > high or (positive and value <= 0):
        bounds = "a positive number" if positive else f"between {low:g} and {high:g}"
        raise RequestError(400, f"{name} must be {bounds}, found {value!r}", param=name)
    return value


def _text_content(content: Any, where: str) -> str:
    """A message's content: a string, or a list of parts of which the text ones count."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise RequestError(400, f"{where}: only text content parts are supported, found {part!r:.80}",
                                   param="messages")
            texts.append(part["text"])
        return "".join(texts)
    raise RequestError(400, f"{where}: content must be a string or a list of text parts, found {type(content).__name__}",
                       param="messages")


def _messages(body: Dict[str, Any]) -> List[Dict[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, f"messages must be a non-empty list of {{role, content}}, found {messages!r:.80}",
                           param="messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "developer", "tool"):
            raise RequestError(400, f"messages[{i}] must have a role of system, user or assistant, found {m!r:.80}",
                               param="messages")
        role = "system" if m["role"] == "developer" else m["role"]
        out.append({"role": role, "content": _text_content(m.get("content", ""), f"messages[{i}]")})
    return out


@dataclass
class Job:
    """One admitted request: what to run and how it ends."""

    kind: str  # "chat" or "completion"
    model: str
    prompt: Any
    chat: bool
    stream: bool
    options: Dict[str, Any]
    arrived: float = field(default_factory=time.monotonic)
    cancel: CancelToken = field(default_factory=CancelToken)
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:24])
    created: int = field(default_factory=lambda: int(time.time()))
    started: Optional[float] = None
    expired_at: Optional[float] = None  # set when the deadline passed before the runtime got to it
    events: Optional["Mailbox"] = None
    loop: Optional[asyncio.AbstractEventLoop] = None

    @property
    def deadline_s(self) -> Optional[float]:
        return self.options.get("deadline_s")

    def emit(self, event: Tuple[str, Any]) -> None:
        """Hand an event (token, done, error) from the worker thread to the request's coroutine."""
        if self.events is not None and self.loop is not None:
            self.loop.call_soon_threadsafe(self.events.put, event)


class Mailbox:
    """Events for one request's coroutine, in order (used on the event loop only)."""

    def __init__(self) -> None:
        self._items: Deque[Tuple[str, Any]] = deque()
        self._ready = asyncio.Event()

    def put(self, item: Tuple[str, Any]) -> None:
        self._items.append(item)
        self._ready.set()

    def empty(self) -> bool:
        return not self._items

    def take(self) -> Tuple[str, Any]:
        item = self._items.popleft()
        if not self._items:
            self._ready.clear()
        return item

    async def wait(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._ready.wait(), timeout=timeout)
        except asyncio.TimeoutError:
            pass


class Metrics:
    """Counters for /metrics, in Prometheus' text exposition format (version 0.0.4)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Dict[Tuple[str, int], int] = {}
        self.deadline = {"met": 0, "missed": 0}
        self.tokens_out = 0
        self.tokens_in = 0
        self.busy_s = 0.0
        self.energy_j: Dict[str, float] = {}
        self.rejected = 0
        self.cancelled = 0
        self.latency_buckets = [0] * len(LATENCY_BUCKETS_S)
        self.latency_sum_s = 0.0
        self.latency_count = 0
        self.recent_latency_s: Deque[float] = deque(maxlen=32)

    def request(self, endpoint: str, status: int) -> None:
        with self._lock:
            self.requests[(endpoint, status)] = self.requests.get((endpoint, status), 0) + 1

    def finished(self, result: Optional[RuntimeResult], latency_s: float, busy_s: float, cancelled: bool) -> None:
        with self._lock:
            self.busy_s += busy_s
            self.cancelled += int(cancelled)
            self.recent_latency_s.append(latency_s)
            self.latency_sum_s += latency_s
            self.latency_count += 1
            for i, bound in enumerate(LATENCY_BUCKETS_S):
                if latency_s <= bound:
                    self.latency_buckets[i] += 1
            if result is None:
                return
            self.tokens_out += result.tokens_out
            self.tokens_in += result.generation.tokens_in
            if result.deadline_met is not None and not cancelled:
                self.deadline["met" if result.deadline_met else "missed"] += 1
            if result.energy_j is not None:
                key = result.energy_provenance
                self.energy_j[key] = self.energy_j.get(key, 0.0) + result.energy_j

    def reject(self) -> None:
        with self._lock:
            self.rejected += 1

    def count_deadline(self, met: bool) -> None:
        with self._lock:
            self.deadline["met" if met else "missed"] += 1

    def typical_latency_s(self) -> float:
        with self._lock:
            recent = sorted(self.recent_latency_s)
        return recent[len(recent) // 2] if recent else 1.0

    def render(self, queue_depth: int, running: int) -> str:
        with self._lock:
            lines = [
                "# HELP edgert_requests_total HTTP requests by endpoint and status code.",
                "# TYPE edgert_requests_total counter",
            ]
            for (endpoint, status), count in sorted(self.requests.items()):
                lines.append(f'edgert_requests_total{{endpoint="{endpoint}",code="{status}"}} {count}')
            lines += ["# HELP edgert_deadline_total Generations with a deadline, by whether the answer came in time.",
                      "# TYPE edgert_deadline_total counter"]
            lines += [f'edgert_deadline_total{{result="{k}"}} {v}' for k, v in self.deadline.items()]
            lines += ["# HELP edgert_tokens_generated_total Tokens generated (all samples).",
                      "# TYPE edgert_tokens_generated_total counter", f"edgert_tokens_generated_total {self.tokens_out}",
                      "# HELP edgert_prompt_tokens_total Prompt tokens evaluated.",
                      "# TYPE edgert_prompt_tokens_total counter", f"edgert_prompt_tokens_total {self.tokens_in}",
                      "# HELP edgert_busy_seconds_total Time spent generating.",
                      "# TYPE edgert_busy_seconds_total counter", f"edgert_busy_seconds_total {self.busy_s:.6f}",
                      "# HELP edgert_tokens_per_second Generated tokens per second of generation time, since start.",
                      "# TYPE edgert_tokens_per_second gauge",
                      f"edgert_tokens_per_second {self.tokens_out / self.busy_s if self.busy_s else 0.0:.3f}",
                      "# HELP edgert_energy_joules_total Energy of generations, by provenance (measured or estimated).",
                      "# TYPE edgert_energy_joules_total counter"]
            lines += [f'edgert_energy_joules_total{{provenance="{k}"}} {v:.6f}' for k, v in sorted(self.energy_j.items())]
            lines += ["# HELP edgert_rejected_total Requests refused because the queue was full (503).",
                      "# TYPE edgert_rejected_total counter", f"edgert_rejected_total {self.rejected}",
                      "# HELP edgert_cancelled_total Generations cancelled because the client disconnected.",
                      "# TYPE edgert_cancelled_total counter", f"edgert_cancelled_total {self.cancelled}",
                      "# HELP edgert_queue_depth Requests waiting for the runtime.",
                      "# TYPE edgert_queue_depth gauge", f"edgert_queue_depth {queue_depth}",
                      "# HELP edgert_running Requests being generated (0 or 1).",
                      "# TYPE edgert_running gauge", f"edgert_running {running}",
                      "# HELP edgert_request_latency_seconds Arrival to answer, queue time included.",
                      "# TYPE edgert_request_latency_seconds histogram"]
            for bound, count in zip(LATENCY_BUCKETS_S, self.latency_buckets):
                lines.append(f'edgert_request_latency_seconds_bucket{{le="{bound:g}"}} {count}')
            lines += [f'edgert_request_latency_seconds_bucket{{le="+Inf"}} {self.latency_count}',
                      f"edgert_request_latency_seconds_sum {self.latency_sum_s:.6f}",
                      f"edgert_request_latency_seconds_count {self.latency_count}"]
        return "\n".join(lines) + "\n"


class Server:
    """The request handling, independent of the HTTP framework's routing (see create_app)."""

    def __init__(self, runtime: Runtime, *, queue_size: int = DEFAULT_QUEUE_SIZE,
                 default_deadline_s: Optional[float] = None, model_id: Optional[str] = None):
        if queue_size < 0:
            raise UsageError(f"queue size must be 0 or more, found {queue_size}")
        self.runtime = runtime
        self.queue_size = queue_size
        self.default_deadline_s = default_deadline_s
        self.model_id = model_id or runtime.bundle.manifest.model_name
        self.metrics = Metrics()
        self.started = time.time()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgert-runtime")
        self._admitted = 0  # waiting + running
        self._running = 0
        self._count_lock = threading.Lock()

    # -------------------------------------------------------------- models
    def models(self) -> List[Dict[str, Any]]:
        """The bundle (its default variant, or the planner's choice with strategy auto), then each variant."""
        owned = {"object": "model", "created": int(self.started), "owned_by": "edgert"}
        out = [{"id": self.model_id, **owned, "edgert": {"variants": [v.name for v in self.runtime.bundle.variants]}}]
        for v in self.runtime.bundle.variants:
            out.append({"id": v.name, **owned, "edgert": {"format": v.format, "quantization": v.quantization,
                                                         "size_bytes": v.size_bytes}})
        return out

    def _variant_for(self, model: Any) -> Optional[str]:
        if not isinstance(model, str) or not model:
            raise RequestError(400, f"model must be a model id (see /v1/models), found {model!r}", param="model")
        if model == self.model_id:
            return None
        if model in {v.name for v in self.runtime.bundle.variants}:
            return model
        known = ", ".join(m["id"] for m in self.models())
        raise RequestError(404, f"model {model!r} does not exist; this server has {known}", param="model",
                           code="model_not_found")

    # ------------------------------------------------------------- parsing
    def parse(self, kind: str, raw: bytes) -> Job:
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RequestError(400, f"the request body must be JSON: {exc}") from None
        if not isinstance(body, dict):
            raise RequestError(400, f"the request body must be a JSON object, found {type(body).__name__}")
        variant = self._variant_for(body.get("model"))
        if kind == "chat":
            prompt: Any = _messages(body)
            chat = True
        else:
            prompt = body.get("prompt")
            if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
                prompt = prompt[0]
            if not isinstance(prompt, str) or not prompt:
                raise RequestError(400, f"prompt must be a non-empty string, found {prompt!r:.80}", param="prompt")
            chat = False
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise RequestError(400, f"stream must be true or false, found {stream!r}", param="stream")
        n = _number(body, "n", integer=True, low=1)
        if n not in (None, 1):
            raise RequestError(400, f"n must be 1 (one answer per request; for several samples voted into one "
                               f"answer use strategy sc with samples), found {n}", param="n")
        max_tokens = _number(body, "max_completion_tokens", integer=True, low=1)
        if max_tokens is None:
            max_tokens = _number(body, "max_tokens", integer=True, low=1)
        stop = body.get("stop")
        if isinstance(stop, str):
            stop = [stop]
        if stop is not None and (not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop)):
            raise RequestError(400, f"stop must be a string or a list of strings, found {stop!r:.80}", param="stop")
        deadline_ms = _number(body, "deadline_ms", positive=True)
        strategy = body.get("strategy")
        if strategy is not None and strategy != "auto" and strategy not in Strategy.registry:
            raise RequestError(400, f"strategy must be auto or one of {', '.join(sorted(Strategy.registry))}, "
                               f"found {strategy!r}",
                               param="strategy")
        power_w = _number(body, "power_w", positive=True)
        energy_j = _number(body, "energy_j", positive=True)
        if strategy is None and (power_w is not None or energy_j is not None):
            strategy = "auto"  # only the planner can honour a power or energy limit
        if strategy == "auto" and self.runtime.profile is None:
            raise RequestError(400, "strategy auto (and power_w / energy_j) needs a device profile: start the "
                               "server with --profile PROFILE.json (make one with edgert profile)", param="strategy")
        deadline_s = deadline_ms / 1000 if deadline_ms is not None else self.default_deadline_s
        if strategy == "auto" and deadline_s is None:
            raise RequestError(400, "strategy auto needs deadline_ms (or a server --default-deadline)",
                               param="deadline_ms")
        options: Dict[str, Any] = {
            "deadline_s": deadline_s, "strategy": strategy, "power_w": power_w, "energy_j": energy_j,
            "max_tokens": int(max_tokens) if max_tokens is not None else 256,
            "temperature": _number(body, "temperature", low=0, high=2) or 0.0,
            "top_p": _number(body, "top_p", low=0, high=1) or 1.0,
            "seed": _number(body, "seed", integer=True),
            "stop": tuple(stop or ()), "variant": variant, "chat": chat,
            "n": _number(body, "samples", integer=True, low=1, high=64),
            "think_tokens": _number(body, "think_tokens", integer=True, low=1),
        }
        if options["top_p"] == 0:
            raise RequestError(400, "top_p must be above 0, found 0", param="top_p")
        for name in ("task_set", "answer_type"):
            value = body.get(name)
            if value is not None and not isinstance(value, str):
                raise RequestError(400, f"{name} must be a string, found {value!r:.80}", param=name)
            options[name] = value
        if options["task_set"] is not None and isinstance(prompt, list):
            # a task set asks its question its own way (instruction or few-shot, as calibrated):
            # the question is the last user message
            users = [m["content"] for m in prompt if m["role"] == "user"]
            if not users:
                raise RequestError(400, "with task_set, messages must contain a user message (the question)",
                                   param="messages")
            prompt = users[-1]
        ignore_eos = body.get("ignore_eos", False)
        if not isinstance(ignore_eos, bool):
            raise RequestError(400, f"ignore_eos must be true or false, found {ignore_eos!r}", param="ignore_eos")
        options["ignore_eos"] = ignore_eos
        return Job(kind, self.model_id if variant is None else variant, prompt, chat, stream, options)

    # ------------------------------------------------------------- queueing
    def admit(self, job: Job) -> None:
        with self._count_lock:
            if self._admitted >= self.queue_size + 1:
                self.metrics.reject()
                wait_s = max(1, math.ceil(self.metrics.typical_latency_s() * self._admitted))
                raise RequestError(503, f"the server is busy: {self._admitted} requests admitted, queue holds "
                                   f"{self.queue_size}; retry after {wait_s} s", kind="server_busy",
                                   code="queue_full", headers={"Retry-After": str(wait_s)})
            self._admitted += 1

    def queue_depth(self) -> Tuple[int, int]:
        with self._count_lock:
            return self._admitted - self._running, self._running

    def submit(self, job: Job):
        return asyncio.wrap_future(self._executor.submit(self._run, job))

    def expire(self, job: Job) -> bool:
        """Give up on a job still waiting at its deadline (True), unless it has just started."""
        with self._count_lock:
            if job.started is not None:
                return False
            job.expired_at = time.monotonic()
            job.cancel.cancel()
        latency_s = job.expired_at - job.arrived
        self.metrics.finished(None, latency_s, 0.0, False)
        self.metrics.count_deadline(latency_s <= job.deadline_s)
        return True

    def _run(self, job: Job) -> Optional[RuntimeResult]:
        """In the worker thread: generate, unless the client left or the deadline passed while
        the job waited."""
        with self._count_lock:
            if job.expired_at is not None or job.cancel.cancelled:
                self._admitted -= 1
                if job.expired_at is None:
                    self.metrics.finished(None, time.monotonic() - job.arrived, 0.0, True)
                return None
            job.started = time.monotonic()
            self._running += 1
        result: Optional[RuntimeResult] = None
        try:
            opts = dict(job.options)
            deadline_s = opts.pop("deadline_s")
            opts.pop("chat")
            on_token = (lambda piece, _tok: job.emit(("token", piece))) if job.stream else None
            result = self.runtime.generate(job.prompt, deadline_s=deadline_s, started_at=job.arrived,
                                           cancel_token=job.cancel, on_token=on_token, chat=job.chat, **opts)
            return result
        finally:
            finished = time.monotonic()
            self.metrics.finished(result, finished - job.arrived, finished - job.started, job.cancel.cancelled)
            with self._count_lock:
                self._running -= 1
                self._admitted -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------- responses
    def telemetry(self, job: Job, result: Optional[RuntimeResult]) -> Dict[str, Any]:
        queue_ms = ((job.started or job.expired_at or job.arrived) - job.arrived) * 1000
        if result is None:  # expired in the queue: an empty answer at the deadline
            return {"finish_reason": "deadline", "deadline_s": job.deadline_s,
                    "deadline_met": queue_ms <= (job.deadline_s or 0) * 1000, "deadline_cut": True,
                    "latency_ms": round(queue_ms, 3), "queue_ms": round(queue_ms, 3), "tokens_out": 0,
                    "warnings": ["the deadline passed while the request waited in the queue; answered empty"]}
        data = result.to_dict()
        data.pop("text")
        data.pop("decode_step_ms")
        data["queue_ms"] = round(queue_ms, 3)
        return data

    def usage(self, result: Optional[RuntimeResult]) -> Dict[str, int]:
        prompt = result.generation.tokens_in if result else 0
        completion = result.tokens_out if result else 0
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    @staticmethod
    def _envelope(job: Job, choice: Dict[str, Any], chunk: bool) -> Dict[str, Any]:
        """OpenAI's response object around one choice: chat and text completions differ in id
        prefix and object name (a chat stream's pieces are chat.completion.chunk)."""
        if job.kind == "chat":
            obj, prefix = ("chat.completion.chunk" if chunk else "chat.completion"), "chatcmpl-"
        else:
            obj, prefix = "text_completion", "cmpl-"
        return {"id": prefix + job.id, "object": obj, "created": job.created, "model": job.model, "choices": [choice]}

    def body(self, job: Job, result: Optional[RuntimeResult]) -> Dict[str, Any]:
        text = result.text if result else ""
        choice: Dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": _finish(result)}
        if job.kind == "chat":
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        return {**self._envelope(job, choice, chunk=False), "usage": self.usage(result),
                "edgert": self.telemetry(job, result)}

    def chunk(self, job: Job, *, text: Optional[str] = None, finish: Optional[str] = None,
              first: bool = False, result: Optional[RuntimeResult] = None, final: bool = False) -> str:
        choice: Dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": finish}
        if job.kind == "chat":
            choice["delta"] = {"role": "assistant"} if first else {}
            if text:
                choice["delta"]["content"] = text
        else:
            choice["text"] = text or ""
        data = self._envelope(job, choice, chunk=True)
        if final:
            data["usage"] = self.usage(result)
            data["edgert"] = self.telemetry(job, result)
        return f"data: {json.dumps(data)}\n\n"


def _finish(result: Optional[RuntimeResult]) -> str:
    """OpenAI's finish_reason for a result (None: the deadline passed in the queue)."""
    return _FINISH.get(result.finish_reason, "stop") if result else "length"


def _error_for(exc: BaseException) -> RequestError:
    """A runtime error raised by a request, as the HTTP error the client gets."""
    if isinstance(exc, RequestError):
        return exc
    if isinstance(exc, DeadlineError):
        return RequestError(422, str(exc), param="deadline_ms", code="deadline_too_short")
    if isinstance(exc, UsageError):
        return RequestError(400, str(exc))
    if isinstance(exc, EdgertError):
        return RequestError(422, str(exc), kind="edgert_error")
    return RequestError(500, f"internal error: {type(exc).__name__}: {exc}", kind="server_error")


class CountRequests:
    """ASGI middleware counting responses per endpoint and status (a plain ASGI wrapper, not
    Starlette's BaseHTTPMiddleware, which gets in the way of streaming and disconnects)."""

    KNOWN = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics")

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = {"code": 499}  # nothing sent: the client left first

        async def send_counted(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            path = scope.get("path", "")
            endpoint = next((k for k in self.KNOWN if path == k or path.startswith(k + "/")), "other")
            self.metrics.request(endpoint, status["code"])


def create_app(server: Server) -> FastAPI:
    """The FastAPI application serving ``server``."""
    app = FastAPI(title="edgert", description="OpenAI-compatible API with deadlines and power limits",
                  version="1", docs_url=None, redoc_url=None)
    app.state.server = server

    app.add_middleware(CountRequests, metrics=server.metrics)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException):
        kind = "not_found" if exc.status_code == 404 else "invalid_request_error"
        return RequestError(exc.status_code, str(exc.detail), kind=kind).response()

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError):
        return RequestError(400, f"invalid request: {exc.errors()!r:.200}").response()

    @app.get("/health")
    async def health():
        waiting, running = server.queue_depth()
        return {"status": "ok", "model": server.model_id, "queue_depth": waiting, "running": running,
                "loaded": server.runtime.loaded(), "uptime_s": round(time.time() - server.started, 3)}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": server.models()}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        for m in server.models():
            if m["id"] == model_id:
                return m
        return RequestError(404, f"model {model_id!r} does not exist", code="model_not_found").response()

    @app.get("/metrics")
    async def metrics():
        waiting, running = server.queue_depth()
        return PlainTextResponse(server.metrics.render(waiting, running),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    async def complete(kind: str, request: Request):
        try:
            job = server.parse(kind, await _read_body(request))
            server.admit(job)
        except RequestError as exc:
            return exc.response()
        job.loop = asyncio.get_running_loop()
        if job.stream:
            job.events = Mailbox()
        future = server.submit(job)
        future.add_done_callback(lambda f: job.emit(("done", None)))
        if not job.stream:
            outcome = await _wait(server, job, request, future.done,
                                  lambda timeout: asyncio.wait({future}, timeout=timeout))
            if outcome == "disconnected":
                return _disconnected()
            if outcome == "expired":
                return JSONResponse(server.body(job, None))
            try:
                result = future.result()
            except Exception as exc:  # noqa: BLE001 - each error becomes its HTTP answer
                return _error_for(exc).response()
            return JSONResponse(server.body(job, result))
        return await _stream(server, job, future, request)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await complete("chat", request)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await complete("completion", request)

    return app


async def _read_body(request: Request) -> bytes:
    """The request body, refused with 413 beyond MAX_BODY_BYTES (before or while reading)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise RequestError(413, f"the request body must be at most {MAX_BODY_BYTES} bytes, found {declared}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise RequestError(413, f"the request body must be at most {MAX_BODY_BYTES} bytes, found more")
        chunks.append(chunk)
    return b"".join(chunks)


def _disconnected() -> JSONResponse:
    return JSONResponse({"error": {"message": "client disconnected", "type": "cancelled"}}, status_code=499)


async def _wait(server: Server, job: Job, request: Request, ready, waiter) -> str:
    """Wait until ``ready()`` ("ready"), sleeping in ``await waiter(timeout)`` (which returns
    early when ready); meanwhile cancel the job if the client disconnects ("disconnected") or
    answer for it if its deadline passes while it still waits in the queue ("expired")."""
    expire_at = job.arrived + job.deadline_s - RETURN_MARGIN_S if job.deadline_s is not None else math.inf
    while not ready():
        timeout = DISCONNECT_POLL_S
        if job.started is None:
            timeout = max(0.0, min(timeout, expire_at - time.monotonic()))
        await waiter(timeout)
        if ready():
            break
        if job.started is None and time.monotonic() >= expire_at and server.expire(job):
            return "expired"
        if await request.is_disconnected():
            job.cancel.cancel()
            return "disconnected"
    return "ready"


async def _next_event(server: Server, job: Job, request: Request) -> str:
    return await _wait(server, job, request, lambda: not job.events.empty(), job.events.wait)


async def _stream(server: Server, job: Job, future, request: Request):
    """Server-sent events. The first event is awaited before answering, so an error that
    happens before any token (a prompt longer than the context) is still a 4xx."""
    outcome = await _next_event(server, job, request)
    if outcome == "disconnected":
        return _disconnected()
    first = job.events.take() if outcome == "ready" else ("done", None)  # expired: nothing ran
    if outcome == "ready" and first[0] == "done" and future.exception() is not None:
        return _error_for(future.exception()).response()

    async def events():
        event, opened = first, False
        try:
            while event[0] == "token":
                yield server.chunk(job, text=event[1], first=not opened)
                opened = True
                if await _next_event(server, job, request) == "disconnected":
                    return
                event = job.events.take()
            exc = future.exception() if future.done() else None
            if exc is not None:  # after tokens were sent the status is already 200: report it in the stream
                err = _error_for(exc)
                yield f"data: {json.dumps({'error': {'message': err.message, 'type': err.kind}})}\n\n"
                return
            result = future.result() if outcome == "ready" else None
            if not opened:  # nothing streamed (strategies answer at the end; an expired job): the whole text
                yield server.chunk(job, text=result.text if result else "", first=True)
            yield server.chunk(job, finish=_finish(result), result=result, final=True)
            yield "data: [DONE]\n\n"
        finally:
            if not future.done():  # the client went away mid-stream (the generator was closed)
                job.cancel.cancel()

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def check_address(host: str, port: int) -> None:
    """Raise UsageError unless the server could listen on host:port (taken, or not this host's)."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise UsageError(f"--host/--port: expected an address edgert can listen on, found {host}:{port} "
                         f"unavailable ({os.strerror(exc.errno) if exc.errno else exc})") from None


def serve(server: Server, host: str = "127.0.0.1", port: int = 8080, log_level: str = "warning") -> None:
    """Run the server until interrupted (Ctrl-C)."""
    import uvicorn

    try:
        uvicorn.run(create_app(server), host=host, port=port, log_level=log_level)
    finally:
        server.close()
