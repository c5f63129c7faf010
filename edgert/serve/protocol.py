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
- ``fallback``: returned as the answer when a ``response_format`` or tool call could not be
  completed validly by the deadline (a string as it is, any other JSON value as JSON).

Every field of OpenAI's request is either honoured or refused with a 400
(``code: "unsupported_parameter"``); an unknown field is refused too (``unknown_parameter``):
nothing is ignored silently. docs/serve.md lists each field and what edgert does with it.

Every response carries an ``edgert`` object: the configuration chosen, the plan, latency,
queue time, tokens, energy (measured or estimated) and whether the deadline was met.

Rules about a request's fields live in ``Request.check()``. This module keeps the protocol's
own: JSON shapes, OpenAI's names and ranges (``max_completion_tokens``, temperature 0-2,
``n`` up to the batch size), ``power_w`` / ``energy_j`` implying strategy auto, a task set's question being
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
from ..runners.types import CancelToken
from .errors import RequestError
from .fields import (flag, fallback, logit_bias, number, refuse_unknown, stream_options, string,
                     task_set as task_set_field)
from .structured import ToolPlan, response_format, tool_plan

#: most samples one request may ask for (sc / esc / bon); a guard, like the body size limit
MAX_SAMPLES = 64
#: most independent answers (OpenAI's n): they are decoded in one batch (llama.cpp's n_seq_max)
MAX_CHOICES = 8
#: the runtime's finish reasons as OpenAI's (the runtime's own stays in edgert.finish_reason)
FINISH = {"stop": "stop", "length": "length", "deadline": "length"}
STREAM_DONE = "data: [DONE]\n\n"
_ROLES = ("system", "user", "assistant", "developer", "tool")
TOOL_CALL_DONE = "tool_calls"  # OpenAI's finish_reason when the answer is a tool call
_REQUEST_FIELDS = frozenset(f.name for f in dataclasses.fields(Request))
#: how Request.check() names fields in the server's messages (body keys and the server's fixes)
_CHECK_NAMES = {
    "deadline_s": "deadline_ms", "n": "samples", "strategy": "strategy",
    "profile": "a device profile: start the server with --profile PROFILE.json (power_w and energy_j need one too)",
    "auto_deadline": "deadline_ms (or start the server with --default-deadline)",
}


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
    tools: ToolPlan = ToolPlan((), "none", None)
    logprobs: bool = False  # return log-probabilities of the tokens
    include_usage: bool = False  # a stream ends with a usage chunk

    @property
    def streams_tokens(self) -> bool:
        """Whether tokens stream as they are drawn: not when the answer may still be replaced
        (a tool call is parsed at the end; a fallback replaces an invalid answer) or when
        several answers are decoded together."""
        return (self.stream and not self.tools.calls and self.request.fallback is None
                and self.request.completions == 1)

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


def _history_calls(calls: Any, where: str) -> List[Dict[str, Any]]:
    """An assistant message's earlier tool calls, for the chat template (arguments as objects,
    the way transformers' templates print them)."""
    if not isinstance(calls, list) or not calls:
        raise RequestError(400, f"{where}.tool_calls must be a non-empty list, found {calls!r:.80}", param="messages")
    out = []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) \
                or not isinstance(function.get("arguments", "{}"), str):
            raise RequestError(400, f"{where}.tool_calls entries must be {{id, type: function, function: {{name, "
                               f"arguments: a JSON string}}}}, found {call!r:.80}", param="messages")
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except ValueError:
            raise RequestError(400, f"{where}.tool_calls arguments must be JSON text, found "
                               f"{function.get('arguments')!r:.80}", param="messages") from None
        entry = {"type": "function", "function": {"name": function["name"], "arguments": arguments}}
        if isinstance(call.get("id"), str):
            entry["id"] = call["id"]
        out.append(entry)
    return out


def _messages(body: Dict[str, Any]) -> List[Dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, f"messages must be a non-empty list of {{role, content}}, found {messages!r:.80}",
                           param="messages")
    out = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            raise RequestError(400, f"{where} must have a role of system, developer, user, assistant or tool, "
                               f"found {m!r:.80}", param="messages")
        role = "system" if m["role"] == "developer" else m["role"]
        message: Dict[str, Any] = {"role": role}
        if role == "assistant" and m.get("tool_calls") is not None:
            message["tool_calls"] = _history_calls(m["tool_calls"], where)
            # "" rather than null: templates that know nothing of tool calls still render it
            message["content"] = "" if m.get("content") is None else _text_content(m["content"], where)
        else:
            message["content"] = _text_content(m.get("content", ""), where)
        if role == "tool":
            call_id = m.get("tool_call_id")
            if not isinstance(call_id, str):
                raise RequestError(400, f"{where}: a tool message needs tool_call_id, a string; found {call_id!r:.60}",
                                   param="messages")
            message["tool_call_id"] = call_id
        if isinstance(m.get("name"), str):
            message["name"] = m["name"]
        out.append(message)
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
          arrived: Optional[float] = None, task_sets: Optional[Sequence[str]] = None) -> Job:
    """A request body of ``/v1/chat/completions`` (kind "chat") or ``/v1/completions``
    ("completion") as a Job holding its checked Request; RequestError if it is refused.

    task_sets: the task set names a client may ask by besides the shipped ones and ``rg:``
    specs (those the bundle was calibrated on); None: any. A client never names a file.
    variants: the bundle's variant names (a body's ``model`` may name one); arrived: the
    request's arrival on ``time.monotonic()`` (default: now)."""
    arrived = time.monotonic() if arrived is None else arrived
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"the request body must be JSON: {exc}") from None
    if not isinstance(body, dict):
        raise RequestError(400, f"the request body must be a JSON object, found {type(body).__name__}")
    refuse_unknown(body, kind)
    variant = _variant_for(body.get("model"), model_id, variants)
    prompt = _prompt(kind, body)
    stream = flag(body, "stream")
    include_usage = stream_options(body, stream)
    n = number(body, "n", integer=True, low=1, high=MAX_CHOICES)
    max_name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    sampling = {"max_tokens": number(body, max_name, integer=True),
                "temperature": number(body, "temperature", low=0, high=2),
                "top_p": number(body, "top_p", low=0, high=1),
                "presence_penalty": number(body, "presence_penalty", low=-2, high=2),
                "frequency_penalty": number(body, "frequency_penalty", low=-2, high=2)}
    deadline_ms = number(body, "deadline_ms")
    if deadline_ms is not None and not deadline_ms > 0:  # checked in the body's unit
        raise RequestError(400, f"deadline_ms must be a positive number of milliseconds, found {deadline_ms!r}",
                           param="deadline_ms")
    power_w, energy_j = number(body, "power_w"), number(body, "energy_j")
    strategy = body.get("strategy")
    if strategy is not None and not isinstance(strategy, str):
        raise RequestError(400, f"strategy must be a string, found {type(strategy).__name__}", param="strategy")
    if strategy is None and (power_w is not None or energy_j is not None):
        strategy = AUTO  # only the planner can honour a power or energy limit
    task_set = task_set_field(body, task_sets)
    tools = tool_plan(body.get("tools"), body.get("tool_choice")) if kind == "chat" else ToolPlan((), "none", None)
    constraint = response_format(body.get("response_format"))
    if constraint is not None and tools.constraint is not None:
        raise RequestError(400, "response_format json and a tool call cannot both shape one answer: use tool_choice "
                           "none, or no response_format", param="response_format")
    logprobs = flag(body, "logprobs")
    top = number(body, "top_logprobs", integer=True, low=0, high=20)
    if top is not None and not logprobs:
        raise RequestError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
    request = Request(
        _question(prompt) if task_set is not None else prompt, chat=kind == "chat",
        deadline_s=deadline_ms / 1000 if deadline_ms is not None else default_deadline_s,
        power_w=power_w, energy_j=energy_j, strategy=strategy, variant=variant,
        seed=number(body, "seed", integer=True), stop=_stop(body), ignore_eos=flag(body, "ignore_eos"),
        n=number(body, "samples", integer=True, high=MAX_SAMPLES),
        think_tokens=number(body, "think_tokens", integer=True), answer_type=string(body, "answer_type"),
        task_set=task_set, started_at=arrived, constraint=constraint or tools.constraint, tools=tools.tools,
        fallback=fallback(body), logit_bias=logit_bias(body), completions=n or 1,
        top_logprobs=(top or 0) if logprobs else 0,
        **{k: v for k, v in sampling.items() if v is not None})
    params = {"deadline_s": "deadline_ms", "n": "samples", "max_tokens": max_name, "completions": "n",
              "prompt": "messages" if kind == "chat" else "prompt", "constraint": "response_format"}
    try:
        request.check(has_profile=has_profile, names={**_CHECK_NAMES, "max_tokens": max_name, "completions": "n"})
    except UsageError as exc:
        raise RequestError(400, str(exc), param=params.get(exc.field, exc.field)) from None
    return Job(kind, model_id if variant is None else variant, request, stream, tools=tools, logprobs=logprobs,
               include_usage=include_usage)
