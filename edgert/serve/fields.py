"""The fields a request body may carry, and the checks of single values and of OpenAI's
newer fields (what edgert cannot honour is refused, never ignored). No FastAPI here."""

from __future__ import annotations

import json
from typing import Any, Dict, Optional, Sequence

from ..runners.types import is_finite
from ..tasks import builtin_task_sets, is_generated
from .errors import RequestError

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

def number(body: Dict[str, Any], name: str, *, integer: bool = False, low: Optional[float] = None,
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


def flag(body: Dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise RequestError(400, f"{name} must be true or false, found {value!r}", param=name)
    return value


def string(body: Dict[str, Any], name: str) -> Optional[str]:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise RequestError(400, f"{name} must be a string, found {value!r:.80}", param=name)
    return value


def task_set(body: Dict[str, Any], allowed: Optional[Sequence[str]]) -> Optional[str]:
    """A task set by name: shipped, ``rg:`` generated, or one the bundle was calibrated on.
    The server never reads a file a client names."""
    name = string(body, "task_set")
    if name is None or allowed is None or name in builtin_task_sets() or is_generated(name) or name in allowed:
        return name
    known = ", ".join([*builtin_task_sets(), *allowed, "rg:<dataset>"])
    raise RequestError(400, f"task_set must name a shipped or calibrated task set ({known}), found {name!r:.80}",
                       param="task_set")


def unsupported(name: str, why: str) -> RequestError:
    return RequestError(400, f"{name} is not supported by edgert: {why}", param=name, code="unsupported_parameter")


def refuse_unknown(body: Dict[str, Any], kind: str) -> None:
    """Every field is honoured or refused: unknown ones, and known ones edgert cannot honour."""
    unknown = sorted(k for k in body if k not in OPENAI_FIELDS and k not in EDGERT_FIELDS)
    if unknown:
        raise RequestError(400, f"unknown field {unknown[0]!r:.60}: expected OpenAI's fields or edgert's "
                           f"({', '.join(sorted(EDGERT_FIELDS))})", param=str(unknown[0])[:60], code="unknown_parameter")
    for name in ("audio", "prediction", "web_search_options", "functions", "function_call", "suffix",
                 "reasoning_effort", "verbosity"):
        if body.get(name) is not None:
            raise unsupported(name, "text generation only (use tools and tool_choice for function calls)"
                               if name.startswith("function") else "edgert generates text from text prompts")
    if body.get("modalities") not in (None, ["text"]):
        raise unsupported("modalities", 'only ["text"]')
    if body.get("echo") not in (None, False):
        raise unsupported("echo", "the prompt is not repeated in the answer")
    if body.get("best_of") not in (None, 1):
        raise unsupported("best_of", "use strategy bon with samples for best-of-N")
    if body.get("store") not in (None, False):
        raise unsupported("store", "edgert keeps no completions (use --trace for a decision log)")
    if body.get("parallel_tool_calls") not in (None, True, False):
        raise RequestError(400, f"parallel_tool_calls must be true or false, found {body['parallel_tool_calls']!r:.40}",
                           param="parallel_tool_calls")
    if kind != "chat":
        for name in ("tools", "tool_choice", "response_format", "parallel_tool_calls"):
            if body.get(name) is not None:
                raise unsupported(name, "it belongs to /v1/chat/completions")


def stream_options(body: Dict[str, Any], stream: bool) -> bool:
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
        raise unsupported(f"stream_options.{str(extra[0])[:40]}", "only include_usage is known")
    return flag(options, "include_usage")


def logit_bias(body: Dict[str, Any]) -> Optional[Dict[int, float]]:
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


def fallback(body: Dict[str, Any]) -> Optional[str]:
    """The answer to return if the answer's constraint cannot be met (a string as it is, other JSON as JSON)."""
    if "fallback" not in body:
        return None
    value = body["fallback"]
    return value if isinstance(value, str) else json.dumps(value)
