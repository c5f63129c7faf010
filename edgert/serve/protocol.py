"""The OpenAI protocol: request bodies as edgert Requests, response envelopes, HTTP errors.

No FastAPI here, so the protocol imports and tests without the ``serve`` extra.

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

Rules about a request's fields live in ``Request.check()``. This module keeps the protocol's
own: JSON shapes, OpenAI's names and ranges (``max_completion_tokens``, temperature 0-2,
``n`` = 1), ``power_w`` / ``energy_j`` implying strategy auto, a task set's question being
the last user message, the server's default deadline and its cap on samples. A UsageError
from ``check()`` becomes a 400 naming the body field it is about.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..bundle.manifest import Variant
from ..errors import DeadlineError, EdgertError, UsageError
from ..request import AUTO, Request
from ..result import RuntimeResult
from ..runners.types import CancelToken, is_finite

#: most samples one request may ask for (sc / esc / bon); a guard, like the body size limit
MAX_SAMPLES = 64
#: the runtime's finish reasons as OpenAI's (the runtime's own stays in edgert.finish_reason)
FINISH = {"stop": "stop", "length": "length", "deadline": "length"}
STREAM_DONE = "data: [DONE]\n\n"
_ROLES = ("system", "user", "assistant", "developer", "tool")
_REQUEST_FIELDS = frozenset(f.name for f in dataclasses.fields(Request))
#: how Request.check() names fields in the server's messages (body keys and the server's fixes)
_CHECK_NAMES = {
    "deadline_s": "deadline_ms", "n": "samples", "strategy": "strategy",
    "profile": "a device profile: start the server with --profile PROFILE.json (power_w and energy_j need one too)",
    "auto_deadline": "deadline_ms (or start the server with --default-deadline)",
}


class RequestError(Exception):
    """A request the server refuses: HTTP status, OpenAI error type and the offending field."""

    def __init__(self, status: int, message: str, *, param: Optional[str] = None, code: Optional[str] = None,
                 kind: str = "invalid_request_error", headers: Optional[Dict[str, str]] = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind
        self.headers = headers or {}

    def body(self) -> Dict[str, Any]:
        """OpenAI's error object."""
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def error_for(exc: BaseException) -> RequestError:
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


@dataclass
class Job:
    """One admitted request: what to run and how it ends."""

    kind: str  # "chat" or "completion"
    model: str
    request: Request  # its started_at is the arrival, on time.monotonic()
    stream: bool
    cancel: CancelToken = field(default_factory=CancelToken)
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:24])
    created: int = field(default_factory=lambda: int(time.time()))
    started: Optional[float] = None
    expired_at: Optional[float] = None  # set when the deadline passed before the runtime got to it
    events: Any = None  # a queue.Mailbox when streaming
    loop: Optional[asyncio.AbstractEventLoop] = None

    @property
    def arrived(self) -> float:
        return self.request.started_at

    @property
    def deadline_s(self) -> Optional[float]:
        return self.request.deadline_s

    def emit(self, event: Tuple[str, Any]) -> None:
        """Hand an event (token, done, error) from the worker thread to the request's coroutine."""
        if self.events is not None and self.loop is not None:
            self.loop.call_soon_threadsafe(self.events.put, event)


# ---------------------------------------------------------------------------- models
def models(model_id: str, variants: Sequence[Variant], created: int) -> List[Dict[str, Any]]:
    """/v1/models: the bundle (its default variant, or the planner's choice with strategy
    auto), then each variant."""
    owned = {"object": "model", "created": created, "owned_by": "edgert"}
    out = [{"id": model_id, **owned, "edgert": {"variants": [v.name for v in variants]}}]
    for v in variants:
        out.append({"id": v.name, **owned, "edgert": {"format": v.format, "quantization": v.quantization,
                                                     "size_bytes": v.size_bytes}})
    return out


def _variant_for(model: Any, model_id: str, variants: Sequence[str]) -> Optional[str]:
    if not isinstance(model, str) or not model:
        raise RequestError(400, f"model must be a model id (see /v1/models), found {model!r}", param="model")
    if model == model_id:
        return None
    if model in variants:
        return model
    known = ", ".join([model_id, *variants])
    raise RequestError(404, f"model {model!r} does not exist; this server has {known}", param="model",
                       code="model_not_found")


# ---------------------------------------------------------------------------- parsing
def _number(body: Dict[str, Any], name: str, *, integer: bool = False, low: Optional[float] = None,
            high: Optional[float] = None) -> Optional[float]:
    """A JSON number (an integer if asked), within OpenAI's or the server's range if given."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        kind = "an integer" if integer else "a number"
        raise RequestError(400, f"{name} must be {kind}, found {value!r}", param=name)
    if not is_finite(value):  # inf cannot come from JSON, but 1e999 and a 400-digit integer can
        raise RequestError(400, f"{name} must be a finite number, found {str(value)[:40]}", param=name)
    if (low is not None or high is not None) and not ( (low is None or value >= low) and (high is None or value <= high)):
        bounds = f"between {low:g} and {high:g}" if low is not None and high is not None else f"at most {high:g}"
        raise RequestError(400, f"{name} must be {bounds}, found {value!r}", param=name)
    return value


def _flag(body: Dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise RequestError(400, f"{name} must be true or false, found {value!r}", param=name)
    return value


def _string(body: Dict[str, Any], name: str) -> Optional[str]:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise RequestError(400, f"{name} must be a string, found {value!r:.80}", param=name)
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
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            raise RequestError(400, f"messages[{i}] must have a role of system, user or assistant, found {m!r:.80}",
                               param="messages")
        role = "system" if m["role"] == "developer" else m["role"]
        out.append({"role": role, "content": _text_content(m.get("content", ""), f"messages[{i}]")})
    return out


def _prompt(kind: str, body: Dict[str, Any]) -> Any:
    if kind == "chat":
        return _messages(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise RequestError(400, f"prompt must be a non-empty string, found {prompt!r:.80}", param="prompt")
    return prompt


def _stop(body: Dict[str, Any]) -> Tuple[str, ...]:
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (not isinstance(stop, list) or not all(isinstance(s, str) for s in stop)):
        raise RequestError(400, f"stop must be a string or a list of strings, found {stop!r:.80}", param="stop")
    return tuple(stop or ())


def _question(prompt: Any) -> Any:
    """A task set asks its question its own way (instruction or few-shot, as calibrated): the
    question of a chat is its last user message."""
    if not isinstance(prompt, list):
        return prompt
    users = [m["content"] for m in prompt if m["role"] == "user"]
    if not users:
        raise RequestError(400, "with task_set, messages must contain a user message (the question)",
                           param="messages")
    return users[-1]


def parse(kind: str, raw: bytes, *, model_id: str, variants: Sequence[str],
          default_deadline_s: Optional[float] = None, has_profile: bool = False,
          arrived: Optional[float] = None) -> Job:
    """A request body of ``/v1/chat/completions`` (kind "chat") or ``/v1/completions``
    ("completion") as a Job holding its checked Request; RequestError if it is refused.

    variants: the bundle's variant names (a body's ``model`` may name one); arrived: the
    request's arrival on ``time.monotonic()`` (default: now)."""
    arrived = time.monotonic() if arrived is None else arrived
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"the request body must be JSON: {exc}") from None
    if not isinstance(body, dict):
        raise RequestError(400, f"the request body must be a JSON object, found {type(body).__name__}")
    variant = _variant_for(body.get("model"), model_id, variants)
    prompt = _prompt(kind, body)
    stream = _flag(body, "stream")
    n = _number(body, "n", integer=True)
    if n not in (None, 1):
        raise RequestError(400, f"n must be 1 (one answer per request; for several samples voted into one "
                           f"answer use strategy sc with samples), found {n}", param="n")
    max_name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    sampling = {"max_tokens": _number(body, max_name, integer=True),
                "temperature": _number(body, "temperature", low=0, high=2),
                "top_p": _number(body, "top_p", low=0, high=1)}
    deadline_ms = _number(body, "deadline_ms")
    if deadline_ms is not None and not deadline_ms > 0:  # checked in the body's unit
        raise RequestError(400, f"deadline_ms must be a positive number of milliseconds, found {deadline_ms!r}",
                           param="deadline_ms")
    power_w, energy_j = _number(body, "power_w"), _number(body, "energy_j")
    strategy = body.get("strategy")
    if strategy is None and (power_w is not None or energy_j is not None):
        strategy = AUTO  # only the planner can honour a power or energy limit
    task_set = _string(body, "task_set")
    request = Request(
        _question(prompt) if task_set is not None else prompt, chat=kind == "chat",
        deadline_s=deadline_ms / 1000 if deadline_ms is not None else default_deadline_s,
        power_w=power_w, energy_j=energy_j, strategy=strategy, variant=variant,
        seed=_number(body, "seed", integer=True), stop=_stop(body), ignore_eos=_flag(body, "ignore_eos"),
        n=_number(body, "samples", integer=True, high=MAX_SAMPLES),
        think_tokens=_number(body, "think_tokens", integer=True), answer_type=_string(body, "answer_type"),
        task_set=task_set, started_at=arrived, **{k: v for k, v in sampling.items() if v is not None})
    params = {"deadline_s": "deadline_ms", "n": "samples", "max_tokens": max_name,
              "prompt": "messages" if kind == "chat" else "prompt"}
    try:
        request.check(has_profile=has_profile, names={**_CHECK_NAMES, "max_tokens": max_name})
    except UsageError as exc:
        raise RequestError(400, str(exc), param=params.get(exc.field, exc.field)) from None
    return Job(kind, model_id if variant is None else variant, request, stream)


# ---------------------------------------------------------------------------- responses
def finish_reason(result: Optional[RuntimeResult]) -> str:
    """OpenAI's finish_reason for a result (None: the deadline passed in the queue)."""
    return FINISH.get(result.finish_reason, "stop") if result else "length"


def telemetry(job: Job, result: Optional[RuntimeResult]) -> Dict[str, Any]:
    """The ``edgert`` object of a response: the runtime's record plus the time spent queued."""
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


def usage(result: Optional[RuntimeResult]) -> Dict[str, int]:
    prompt = result.generation.tokens_in if result else 0
    completion = result.tokens_out if result else 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _envelope(job: Job, choice: Dict[str, Any], chunk: bool) -> Dict[str, Any]:
    """OpenAI's response object around one choice: chat and text completions differ in id
    prefix and object name (a chat stream's pieces are chat.completion.chunk)."""
    if job.kind == "chat":
        obj, prefix = ("chat.completion.chunk" if chunk else "chat.completion"), "chatcmpl-"
    else:
        obj, prefix = "text_completion", "cmpl-"
    return {"id": prefix + job.id, "object": obj, "created": job.created, "model": job.model, "choices": [choice]}


def body(job: Job, result: Optional[RuntimeResult]) -> Dict[str, Any]:
    """The response to a request that did not stream (result None: it expired in the queue)."""
    text = result.text if result else ""
    choice: Dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": finish_reason(result)}
    if job.kind == "chat":
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    return {**_envelope(job, choice, chunk=False), "usage": usage(result), "edgert": telemetry(job, result)}


def chunk(job: Job, *, text: Optional[str] = None, finish: Optional[str] = None, first: bool = False,
          result: Optional[RuntimeResult] = None, final: bool = False) -> str:
    """One server-sent event of a stream; the final one carries usage and telemetry."""
    choice: Dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": finish}
    if job.kind == "chat":
        choice["delta"] = {"role": "assistant"} if first else {}
        if text:
            choice["delta"]["content"] = text
    else:
        choice["text"] = text or ""
    data = _envelope(job, choice, chunk=True)
    if final:
        data["usage"] = usage(result)
        data["edgert"] = telemetry(job, result)
    return f"data: {json.dumps(data)}\n\n"


def stream_error(err: RequestError) -> str:
    """An error after a stream began (its status, 200, is already sent): reported as an event."""
    return f"data: {json.dumps({'error': {'message': err.message, 'type': err.kind}})}\n\n"
