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
from ..tasks import builtin_task_sets, is_generated
from ..runners.types import CancelToken, is_finite
from .errors import RequestError
from .structured import ToolPlan, response_format, tool_plan

#: most samples one request may ask for (sc / esc / bon); a guard, like the body size limit
MAX_SAMPLES = 64
#: most independent answers (OpenAI's n): they are decoded in one batch (llama.cpp's n_seq_max)
MAX_CHOICES = 8
#: the fields a body may carry: OpenAI's (chat and completions) and edgert's extensions
OPENAI_FIELDS = frozenset((
    "model", "messages", "prompt", "stream", "stream_options", "n", "max_tokens", "max_completion_tokens",
    "temperature", "top_p", "seed", "stop", "response_format", "tools", "tool_choice", "parallel_tool_calls",
    "logprobs", "top_logprobs", "presence_penalty", "frequency_penalty", "logit_bias", "user", "metadata", "store",
    "service_tier", "reasoning_effort", "audio", "modalities", "prediction", "web_search_options", "functions",
    "function_call", "echo", "best_of", "suffix", "safety_identifier", "prompt_cache_key", "verbosity",
))
EDGERT_FIELDS = frozenset(("deadline_ms", "power_w", "energy_j", "strategy", "task_set", "answer_type", "think_tokens",
                           "samples", "ignore_eos", "fallback"))
#: fields whose every value is accepted because none changes the answer (identifiers, storage hints)
_IGNORABLE = ("user", "metadata", "safety_identifier", "prompt_cache_key", "service_tier")
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
    _refuse_unknown(body, kind)
    variant = _variant_for(body.get("model"), model_id, variants)
    prompt = _prompt(kind, body)
    stream = _flag(body, "stream")
    include_usage = _stream_options(body, stream)
    n = _number(body, "n", integer=True, low=1, high=MAX_CHOICES)
    max_name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    sampling = {"max_tokens": _number(body, max_name, integer=True),
                "temperature": _number(body, "temperature", low=0, high=2),
                "top_p": _number(body, "top_p", low=0, high=1),
                "presence_penalty": _number(body, "presence_penalty", low=-2, high=2),
                "frequency_penalty": _number(body, "frequency_penalty", low=-2, high=2)}
    deadline_ms = _number(body, "deadline_ms")
    if deadline_ms is not None and not deadline_ms > 0:  # checked in the body's unit
        raise RequestError(400, f"deadline_ms must be a positive number of milliseconds, found {deadline_ms!r}",
                           param="deadline_ms")
    power_w, energy_j = _number(body, "power_w"), _number(body, "energy_j")
    strategy = body.get("strategy")
    if strategy is not None and not isinstance(strategy, str):
        raise RequestError(400, f"strategy must be a string, found {type(strategy).__name__}", param="strategy")
    if strategy is None and (power_w is not None or energy_j is not None):
        strategy = AUTO  # only the planner can honour a power or energy limit
    task_set = _task_set(body, task_sets)
    tools = tool_plan(body.get("tools"), body.get("tool_choice")) if kind == "chat" else ToolPlan((), "none", None)
    constraint = response_format(body.get("response_format"))
    if constraint is not None and tools.constraint is not None:
        raise RequestError(400, "response_format json and a tool call cannot both shape one answer: use tool_choice "
                           "none, or no response_format", param="response_format")
    logprobs = _flag(body, "logprobs")
    top = _number(body, "top_logprobs", integer=True, low=0, high=20)
    if top is not None and not logprobs:
        raise RequestError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
    request = Request(
        _question(prompt) if task_set is not None else prompt, chat=kind == "chat",
        deadline_s=deadline_ms / 1000 if deadline_ms is not None else default_deadline_s,
        power_w=power_w, energy_j=energy_j, strategy=strategy, variant=variant,
        seed=_number(body, "seed", integer=True), stop=_stop(body), ignore_eos=_flag(body, "ignore_eos"),
        n=_number(body, "samples", integer=True, high=MAX_SAMPLES),
        think_tokens=_number(body, "think_tokens", integer=True), answer_type=_string(body, "answer_type"),
        task_set=task_set, started_at=arrived, constraint=constraint or tools.constraint, tools=tools.tools,
        fallback=_fallback(body), logit_bias=_logit_bias(body), completions=n or 1,
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


def _task_set(body: Dict[str, Any], allowed: Optional[Sequence[str]]) -> Optional[str]:
    """A task set by name: shipped, ``rg:`` generated, or one the bundle was calibrated on.
    The server never reads a file a client names."""
    name = _string(body, "task_set")
    if name is None or allowed is None or name in builtin_task_sets() or is_generated(name) or name in allowed:
        return name
    known = ", ".join([*builtin_task_sets(), *allowed, "rg:<dataset>"])
    raise RequestError(400, f"task_set must name a shipped or calibrated task set ({known}), found {name!r:.80}",
                       param="task_set")


def _unsupported(name: str, why: str) -> RequestError:
    return RequestError(400, f"{name} is not supported by edgert: {why}", param=name, code="unsupported_parameter")


def _refuse_unknown(body: Dict[str, Any], kind: str) -> None:
    """Every field is honoured or refused: unknown ones, and known ones edgert cannot honour."""
    unknown = sorted(k for k in body if k not in OPENAI_FIELDS and k not in EDGERT_FIELDS)
    if unknown:
        raise RequestError(400, f"unknown field {unknown[0]!r:.60}: expected OpenAI's fields or edgert's "
                           f"({', '.join(sorted(EDGERT_FIELDS))})", param=str(unknown[0])[:60], code="unknown_parameter")
    for name in ("audio", "prediction", "web_search_options", "functions", "function_call", "suffix",
                 "reasoning_effort", "verbosity"):
        if body.get(name) is not None:
            raise _unsupported(name, "text generation only (use tools and tool_choice for function calls)"
                               if name.startswith("function") else "edgert generates text from text prompts")
    if body.get("modalities") not in (None, ["text"]):
        raise _unsupported("modalities", 'only ["text"]')
    if body.get("echo") not in (None, False):
        raise _unsupported("echo", "the prompt is not repeated in the answer")
    if body.get("best_of") not in (None, 1):
        raise _unsupported("best_of", "use strategy bon with samples for best-of-N")
    if body.get("store") not in (None, False):
        raise _unsupported("store", "edgert keeps no completions (use --trace for a decision log)")
    if body.get("parallel_tool_calls") not in (None, True, False):
        raise RequestError(400, f"parallel_tool_calls must be true or false, found {body['parallel_tool_calls']!r:.40}",
                           param="parallel_tool_calls")
    if kind != "chat":
        for name in ("tools", "tool_choice", "response_format", "parallel_tool_calls"):
            if body.get(name) is not None:
                raise _unsupported(name, "it belongs to /v1/chat/completions")


def _stream_options(body: Dict[str, Any], stream: bool) -> bool:
    """Whether a stream ends with a usage chunk (stream_options.include_usage)."""
    options = body.get("stream_options")
    if options is None:
        return False
    if not stream:
        raise RequestError(400, "stream_options needs stream: true", param="stream_options")
    if not isinstance(options, dict):
        raise RequestError(400, f"stream_options must be an object, found {type(options).__name__}",
                           param="stream_options")
    extra = sorted(k for k in options if k != "include_usage")
    if extra:
        raise _unsupported(f"stream_options.{str(extra[0])[:40]}", "only include_usage is known")
    return _flag(options, "include_usage")


def _logit_bias(body: Dict[str, Any]) -> Optional[Dict[int, float]]:
    """OpenAI's logit_bias: token ids (as JSON object keys) to values between -100 and 100."""
    bias = body.get("logit_bias")
    if bias is None:
        return None
    if not isinstance(bias, dict) or len(bias) > 1024:
        raise RequestError(400, f"logit_bias must be an object of at most 1024 token ids, found {bias!r:.80}",
                           param="logit_bias")
    out: Dict[int, float] = {}
    for key, value in bias.items():
        if not (isinstance(key, str) and key.isdigit() and len(key) < 10) or isinstance(value, bool) \
                or not isinstance(value, (int, float)) or not is_finite(value) or not -100 <= value <= 100:
            raise RequestError(400, f"logit_bias maps token ids to numbers between -100 and 100, found "
                               f"{key!r:.20}: {value!r:.20}", param="logit_bias")
        out[int(key)] = float(value)
    return out


def _fallback(body: Dict[str, Any]) -> Optional[str]:
    """The answer to return if the answer's constraint cannot be met (a string as it is, other JSON as JSON)."""
    if "fallback" not in body:
        return None
    value = body["fallback"]
    return value if isinstance(value, str) else json.dumps(value)
