"""The OpenAI response objects: a result as a response body or as server-sent events.

One place decides what a client sees of a result: the choices (``n`` answers, a tool call
instead of text, the request's fallback instead of an answer that does not satisfy its
constraint), OpenAI's finish reasons, usage (cached prompt tokens included), logprobs, and
the ``edgert`` telemetry object. No FastAPI here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from ..result import RuntimeResult
from ..runners.types import GenerationResult
from .errors import RequestError
from .protocol import FINISH, STREAM_DONE, TOOL_CALL_DONE, Job
from .structured import tool_calls

#: ``piece(variant, token_id)``: a token's bytes (for logprobs), from the runtime
Piece = Callable[[str, int], bytes]


@dataclass
class Answer:
    """One choice of a response: its text or tool call, how it ended, its tokens."""

    text: str
    finish_reason: str  # OpenAI's
    tool_calls: Optional[List[Dict[str, Any]]] = None
    generation: Optional[GenerationResult] = None
    satisfied: Optional[bool] = None


def _openai_finish(reason: str, satisfied: Optional[bool]) -> str:
    if satisfied:  # a complete, valid answer, even if closed early for the deadline
        return "stop"
    return FINISH.get(reason, "stop")


def answers(job: Job, result: Optional[RuntimeResult]) -> List[Answer]:
    """The choices of a response (one, or ``n``); None: the deadline passed in the queue."""
    fallback = job.request.fallback
    if result is None:  # nothing ran: the fallback if there is one, else an empty answer
        if fallback is not None:
            return [Answer(fallback, "stop")]
        return [Answer("", "length", satisfied=False if job.request.constraint is not None else None)]
    if result.completions:
        out = []
        for g in result.completions:
            text, satisfied = g.text, g.constraint_satisfied
            if satisfied is False and fallback is not None:
                text, satisfied = fallback, None
            out.append(_answer(job, text, g.finish_reason, satisfied, g))
        return out
    satisfied = result.constraint_satisfied
    return [_answer(job, result.text, result.finish_reason, True if result.fallback_used else satisfied,
                    result.generation)]


def _answer(job: Job, text: str, reason: str, satisfied: Optional[bool], generation: GenerationResult) -> Answer:
    calls = tool_calls(text, job.tools) if satisfied is not False else None
    if calls:
        return Answer("", TOOL_CALL_DONE, calls, generation, satisfied)
    return Answer(text, _openai_finish(reason, satisfied), None, generation, satisfied)


def finish_reason(result: Optional[RuntimeResult]) -> str:
    """OpenAI's finish_reason for an unconstrained result (None: the deadline passed in the
    queue); ``answers`` gives each choice's, tool calls and constraints considered."""
    return FINISH.get(result.finish_reason, "stop") if result else "length"


def telemetry(job: Job, result: Optional[RuntimeResult]) -> Dict[str, Any]:
    """The ``edgert`` object of a response: the runtime's record plus the time spent queued."""
    queue_ms = ((job.started or job.expired_at or job.arrived) - job.arrived) * 1000
    if result is None:  # expired in the queue: an empty answer at the deadline
        data = {"finish_reason": "deadline", "deadline_s": job.deadline_s,
                "deadline_met": queue_ms <= (job.deadline_s or 0) * 1000, "deadline_cut": True,
                "latency_ms": round(queue_ms, 3), "queue_ms": round(queue_ms, 3), "tokens_out": 0,
                "warnings": ["the deadline passed while the request waited in the queue; answered empty"]}
        if job.request.constraint is not None:
            data["constraint"] = {"kind": job.request.constraint.describe(), "satisfied": False,
                                  "fallback_used": job.request.fallback is not None, "closed_tokens": 0}
        return data
    data = result.to_dict()
    data.pop("text")
    data.pop("decode_step_ms")
    data["queue_ms"] = round(queue_ms, 3)
    if result.completions:
        data["choices"] = [{"index": i, "finish_reason": g.finish_reason, "constraint_satisfied": g.constraint_satisfied}
                           for i, g in enumerate(result.completions)]
    return data


def usage(result: Optional[RuntimeResult]) -> Dict[str, Any]:
    prompt = result.generation.tokens_in if result else 0
    completion = (sum(g.tokens_out for g in result.completions) if result and result.completions
                  else result.tokens_out if result else 0)
    cached = result.generation.cached_tokens if result else 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}


def _envelope(job: Job, choices: List[Dict[str, Any]], chunk: bool) -> Dict[str, Any]:
    """OpenAI's response object around its choices: chat and text completions differ in id
    prefix and object name (a chat stream's pieces are chat.completion.chunk)."""
    if job.kind == "chat":
        obj, prefix = ("chat.completion.chunk" if chunk else "chat.completion"), "chatcmpl-"
    else:
        obj, prefix = "text_completion", "cmpl-"
    return {"id": prefix + job.id, "object": obj, "created": job.created, "model": job.model, "choices": choices}


def logprobs(job: Job, answer: Answer, variant: str, piece: Optional[Piece]) -> Optional[Dict[str, Any]]:
    """OpenAI's logprobs object of a choice (None unless asked)."""
    g = answer.generation
    if not job.logprobs or g is None or piece is None:
        return None

    def entry(token: int, logprob: float) -> Dict[str, Any]:
        raw = piece(variant, token)
        return {"token": raw.decode("utf-8", errors="replace"), "logprob": round(logprob, 6), "bytes": list(raw)}

    content = []
    for i, (token, logprob) in enumerate(zip(g.token_ids, g.token_logprobs)):
        item = entry(token, logprob)
        alternatives = g.top_logprobs[i] if i < len(g.top_logprobs) else []
        item["top_logprobs"] = [entry(t, lp) for t, lp in alternatives]
        content.append(item)
    return {"content": content}


def _message(job: Job, answer: Answer) -> Dict[str, Any]:
    if answer.tool_calls:
        return {"role": "assistant", "content": None, "tool_calls": answer.tool_calls}
    return {"role": "assistant", "content": answer.text}


def body(job: Job, result: Optional[RuntimeResult], piece: Optional[Piece] = None) -> Dict[str, Any]:
    """The response to a request that did not stream (result None: it expired in the queue).

    piece: a token's bytes, for logprobs."""
    choices = []
    variant = result.variant if result else ""
    for index, answer in enumerate(answers(job, result)):
        choice: Dict[str, Any] = {"index": index, "logprobs": logprobs(job, answer, variant, piece),
                                  "finish_reason": answer.finish_reason}
        if job.kind == "chat":
            choice["message"] = _message(job, answer)
        else:
            choice["text"] = answer.text
        choices.append(choice)
    return {**_envelope(job, choices, chunk=False), "usage": usage(result), "edgert": telemetry(job, result)}


def chunk(job: Job, *, text: Optional[str] = None, finish: Optional[str] = None, first: bool = False,
          result: Optional[RuntimeResult] = None, final: bool = False, index: int = 0,
          tool_calls: Optional[List[Dict[str, Any]]] = None, logprobs_: Optional[Dict[str, Any]] = None) -> str:
    """One server-sent event of a stream; the final one carries telemetry (and usage, unless
    the client asked for a separate usage chunk with stream_options.include_usage)."""
    choice: Dict[str, Any] = {"index": index, "logprobs": logprobs_, "finish_reason": finish}
    if job.kind == "chat":
        choice["delta"] = {"role": "assistant"} if first else {}
        if text:
            choice["delta"]["content"] = text
        if tool_calls:
            choice["delta"]["tool_calls"] = [{"index": i, **call} for i, call in enumerate(tool_calls)]
    else:
        choice["text"] = text or ""
    data = _envelope(job, [choice], chunk=True)
    if final:
        if not job.include_usage:
            data["usage"] = usage(result)
        data["edgert"] = telemetry(job, result)
    return f"data: {json.dumps(data)}\n\n"


def usage_chunk(job: Job, result: Optional[RuntimeResult]) -> str:
    """The last event of a stream with stream_options.include_usage: no choices, the usage."""
    return f"data: {json.dumps({**_envelope(job, [], chunk=True), 'usage': usage(result)})}\n\n"


def final_chunks(job: Job, result: Optional[RuntimeResult], piece: Optional[Piece], opened: bool) -> List[str]:
    """The events that end a stream: each answer not streamed yet (all of them when tokens
    did not stream), the finish with telemetry, the usage chunk if asked, and [DONE]."""
    out = []
    variant = result.variant if result else ""
    picked = answers(job, result)
    for index, answer in enumerate(picked):
        last = index == len(picked) - 1
        lp = logprobs(job, answer, variant, piece)
        if not opened:
            out.append(chunk(job, text=answer.text, first=True, index=index, tool_calls=answer.tool_calls, logprobs_=lp))
        out.append(chunk(job, finish=answer.finish_reason, result=result, final=last, index=index,
                         logprobs_=lp if opened else None))
    if job.include_usage:
        out.append(usage_chunk(job, result))
    out.append(STREAM_DONE)
    return out


def stream_error(err: RequestError) -> str:
    """An error after a stream began (its status, 200, is already sent): reported as an event."""
    return f"data: {json.dumps({'error': {'message': err.message, 'type': err.kind}})}\n\n"
