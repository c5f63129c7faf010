"""A request body as JSON within limits, or a 400: whatever shape the bytes have, never a 500.

``load_body`` runs before ``protocol.parse`` (which reads the same bytes again): it refuses
what ``json.loads`` would accept but the rest of the server should never see, each with a
one-line message saying what was expected and what was found:

- bytes that are not UTF-8 or not JSON, and a body that is not a JSON object;
- nesting deeper than ``MAX_DEPTH`` (a deep enough one makes ``json.loads`` raise
  RecursionError; a merely deep one would make every recursive walk after it slow);
- more than ``MAX_ITEMS`` values in all (arrays' elements and objects' members);
- the non-standard constants ``NaN``, ``Infinity`` and ``-Infinity`` (``json.loads``
  accepts them by default) and numbers too large for a float (``1e999`` parses as inf);
- integers of more digits than Python converts (ValueError in ``json.loads``);
- strings holding a lone surrogate (``"\\ud800"``): valid JSON, but no valid text, and
  it fails later when the text is encoded (tokenizer, the JSON answer).

Only ``RequestError`` (status 400) leaves this module. No FastAPI here.
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any, Dict, List, Tuple

from .protocol import RequestError

#: deepest nesting of arrays and objects accepted (an OpenAI body needs about 6: tools' schemas a few more)
MAX_DEPTH = 32
#: most values in one body (arrays' elements and objects' members, counted over the whole body)
MAX_ITEMS = 100_000
_SURROGATE = re.compile("[\ud800-\udfff]")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,39}$")


def _refuse(message: str) -> RequestError:
    return RequestError(400, f"the request body {message}")


def _constant(name: str) -> Any:
    raise _refuse(f"must be standard JSON: expected a finite number, found {name}")


def _kind(value: Any) -> str:
    """A parsed value's JSON type, as JSON names it."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return {str: "a string", int: "a number", float: "a number", list: "an array"}.get(type(value), "an object")


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")  # RFC 8259: UTF-8; a leading byte order mark is ignored
    except UnicodeDecodeError as exc:
        raise _refuse(f"must be UTF-8 JSON, found byte 0x{raw[exc.start]:02x} at offset {exc.start}, "
                      f"which is not UTF-8") from None


def _check_string(text: str, where: str) -> None:
    bad = _SURROGATE.search(text)
    if bad:
        raise _refuse(f"must hold valid Unicode text: expected a string without lone surrogates at {where}, "
                      f"found \\u{ord(bad.group()):04x}")


def _member(where: str, key: str) -> str:
    """Where a member is, for messages: $.messages[0].content, or $["odd key"] (one line, ASCII)."""
    return f"{where}.{key}" if _NAME.match(key) else f"{where}[{json.dumps(key[:40])}]"


def _check_tree(body: Any) -> None:
    """Depth, size, finite numbers and valid strings, walked without recursion."""
    stack: List[Tuple[Any, int, str]] = [(body, 0, "$")]
    items = 0
    while stack:
        value, depth, where = stack.pop()
        if isinstance(value, float):
            if not math.isfinite(value):
                raise _refuse(f"must hold finite numbers: expected a number a float can hold at {where}, "
                              f"found one beyond ±1.8e308")
        elif isinstance(value, str):
            _check_string(value, where)
        elif isinstance(value, (dict, list)):
            if depth >= MAX_DEPTH:
                raise _refuse(f"must nest arrays and objects at most {MAX_DEPTH} deep, found deeper at {where}")
            items += len(value)
            if items > MAX_ITEMS:
                raise _refuse(f"must hold at most {MAX_ITEMS} values in all, found more")
            if isinstance(value, dict):
                for key, member in value.items():
                    _check_string(key, f"{where} (a key)")
                    stack.append((member, depth + 1, _member(where, key)))
            else:
                stack.extend((member, depth + 1, f"{where}[{i}]") for i, member in enumerate(value))


def load_body(raw: bytes) -> Dict[str, Any]:
    """The request body as a JSON object within the limits above; RequestError (400) if not."""
    text = _decode(raw)
    if not text.strip():
        raise _refuse("must be a JSON object, found an empty body")
    try:
        body = json.loads(text, parse_constant=_constant)
    except RecursionError:
        raise _refuse(f"must nest arrays and objects at most {MAX_DEPTH} deep, found far deeper") from None
    except json.JSONDecodeError as exc:
        raise _refuse(f"must be JSON, found invalid JSON at line {exc.lineno} column {exc.colno} "
                      f"({exc.msg[:1].lower()}{exc.msg[1:]})") from None
    except ValueError:  # an integer of more digits than int() converts (sys.get_int_max_str_digits())
        limit = getattr(sys, "get_int_max_str_digits", lambda: 4300)()
        raise _refuse(f"must hold numbers edgert can read: expected an integer of at most {limit} digits, "
                      f"found a longer one") from None
    if not isinstance(body, dict):
        raise _refuse(f"must be a JSON object, found {_kind(body)}")
    try:
        _check_tree(body)
    except RecursionError:  # pragma: no cover - the walk does not recurse; a guard for the promise above
        raise _refuse(f"must nest arrays and objects at most {MAX_DEPTH} deep, found far deeper") from None
    return body
