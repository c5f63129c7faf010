"""Strict JSON for files that come from outside (manifests, safetensors headers).

Python's json module keeps the last of duplicate keys (other parsers keep the first, so two
tools can read different values from one file) and accepts NaN and Infinity; it can also
raise RecursionError or ValueError on hostile input. ``loads_strict`` refuses all of these
with one-line messages built by the caller's ``fail``.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Tuple


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def loads_strict(text: str, fail: Callable[[str], Exception]) -> Any:
    """``json.loads`` without duplicate keys or NaN/Infinity; errors become ``fail(message)``."""

    def unique(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
        result: Dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise fail(f"expected unique keys in each object, found {_show(key)} twice")
            result[key] = value
        return result

    def constant(name: str) -> Any:
        raise fail(f"expected standard JSON numbers, found {name}")

    try:
        return json.loads(text, object_pairs_hook=unique, parse_constant=constant)
    except json.JSONDecodeError as exc:
        raise fail(f"not valid JSON (expected a JSON document, found {exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise fail("expected a JSON object, found nesting too deep to parse") from None
    except ValueError as exc:  # e.g. integers longer than Python's digit limit
        raise fail(f"expected JSON, found {_show(str(exc), 200)}") from None
