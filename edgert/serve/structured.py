"""OpenAI's structured output and tool calling, as edgert constraints. No FastAPI here.

- ``response_format``: ``text`` (no constraint), ``json_object`` (any JSON object),
  ``json_schema`` (its ``schema``; edgert always decodes under the schema, so every answer
  that says it is valid is; with ``strict: true`` objects that list properties admit no
  other keys unless the schema says otherwise, as in OpenAI's strict mode).
- ``tools`` and ``tool_choice``: the tools go to the model's chat template; the answer is
  decoded as a call ``{"name": ..., "arguments": {...}}`` whose arguments are constrained to
  that tool's ``parameters`` schema. ``required`` or a named function: the answer must be a
  call. ``auto``: the answer is free text, or (when it opens with ``{``) a call that must be
  valid. ``none``: tools are shown to the model, no call is made.

The call format is edgert's own (a JSON object), not a model's native tool-call markup:
decoding it under a grammar is what makes every call parse, whatever the model.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from ..constraint import Constraint
from ..errors import UsageError
from .errors import RequestError

TOOL_CHOICES = ("none", "auto", "required")
MAX_TOOLS = 64


@dataclass(frozen=True)
class ToolPlan:
    """The tools of a request: what the template sees, how the answer is constrained."""

    tools: Tuple[Dict[str, Any], ...]
    choice: str  # none | auto | required | the name of a function
    constraint: Optional[Constraint]

    @property
    def calls(self) -> bool:
        """Whether the answer may be a tool call."""
        return bool(self.tools) and self.choice != "none"


def _constraint(build) -> Constraint:
    """A constraint checked now, so that a schema llguidance cannot use is a 400 naming the field."""
    try:
        return build().check()
    except UsageError as exc:
        raise RequestError(400, str(exc), param="response_format") from None


def response_format(value: Any) -> Optional[Constraint]:
    """The constraint a ``response_format`` asks for (None for text or when absent)."""
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise RequestError(400, f"response_format must be an object with a type (text, json_object, json_schema), "
                           f"found {value!r:.80}", param="response_format")
    kind = value["type"]
    if kind == "text":
        return None
    if kind == "json_object":
        return _constraint(Constraint.json_object)
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise RequestError(400, "response_format json_schema needs a json_schema object with a schema object, "
                               f"found {spec!r:.80}", param="response_format")
        strict = _optional(spec, "strict", bool, "response_format json_schema", "response_format")
        name = _optional(spec, "name", str, "response_format json_schema", "response_format")
        schema = spec.get("schema", {})
        if strict:
            schema = closed_objects(schema)
        return _constraint(lambda: Constraint.json_schema(schema, name=name))
    raise RequestError(400, f"response_format type must be text, json_object or json_schema, found {kind!r:.40}",
                       param="response_format")


_KINDS = {bool: "true or false", str: "a string", dict: "an object (a JSON schema)"}
#: schema keywords whose value is a schema, or a list or map of schemas (JSON Schema 2020-12)
_SUBSCHEMA = ("items", "additionalItems", "contains", "not", "if", "then", "else", "propertyNames")
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions")


def closed_objects(schema: Any) -> Any:
    """``strict: true``: every object schema with properties and no ``additionalProperties``
    is closed to other keys, as OpenAI's strict mode requires of its schemas (without it a
    model may pad a valid answer with keys of its own)."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if "properties" in out and "additionalProperties" not in out and "patternProperties" not in out:
        out["additionalProperties"] = False
    for key in _SUBSCHEMA:
        if key in out:
            out[key] = closed_objects(out[key])
    for key in _SUBSCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [closed_objects(s) for s in out[key]]
    for key in _SUBSCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {k: closed_objects(v) for k, v in out[key].items()}
    return out


def _optional(obj: Dict[str, Any], key: str, kind: type, where: str, param: str) -> Any:
    """``obj[key]`` if present: of ``kind``, else a 400 naming where it is."""
    value = obj.get(key)
    if value is not None and not isinstance(value, kind):
        raise RequestError(400, f"{where}.{key} must be {_KINDS[kind]}, found {value!r:.60}", param=param)
    return value


def _function(tool: Any, index: int) -> Dict[str, Any]:
    where = f"tools[{index}]"
    if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
        raise RequestError(400, f"{where} must be {{type: function, function: {{name, parameters}}}}, found {tool!r:.80}",
                           param="tools")
    function = tool["function"]
    name = function.get("name")
    if not isinstance(name, str) or not name or len(name) > 64:
        raise RequestError(400, f"{where}.function.name must be a non-empty string of at most 64 characters, "
                           f"found {name!r:.80}", param="tools")
    parameters = _optional(function, "parameters", dict, f"{where}.function", "tools") or \
        {"type": "object", "properties": {}}
    description = _optional(function, "description", str, f"{where}.function", "tools")
    return {"type": "function", "function": {"name": name, "description": description or "", "parameters": parameters}}


def _call_schema(function: Dict[str, Any]) -> Dict[str, Any]:
    return {"type": "object", "properties": {"name": {"const": function["name"]}, "arguments": function["parameters"]},
            "required": ["name", "arguments"], "additionalProperties": False}


def tool_plan(tools: Any, tool_choice: Any) -> ToolPlan:
    """The tools and tool_choice of a request body, checked."""
    if tools is None:
        if tool_choice not in (None, "none", "auto"):
            raise RequestError(400, f"tool_choice {tool_choice!r:.60} needs tools", param="tool_choice")
        return ToolPlan((), "none", None)
    if not isinstance(tools, list) or len(tools) > MAX_TOOLS:
        raise RequestError(400, f"tools must be a list of at most {MAX_TOOLS} function tools, found {tools!r:.80}",
                           param="tools")
    functions = [_function(tool, i) for i, tool in enumerate(tools)]
    names = [f["function"]["name"] for f in functions]
    if len(set(names)) != len(names):
        raise RequestError(400, f"tools must have distinct names, found {names!r:.120}", param="tools")
    choice = "auto" if tool_choice is None else tool_choice
    if isinstance(choice, dict):
        named = choice.get("function") if choice.get("type") == "function" else None
        name = named.get("name") if isinstance(named, dict) else None
        if name not in names:
            raise RequestError(400, f"tool_choice must name one of the tools ({', '.join(names)}), found {choice!r:.80}",
                               param="tool_choice")
        choice = name
    elif choice not in TOOL_CHOICES:
        raise RequestError(400, f"tool_choice must be none, auto, required or {{type: function, function: {{name}}}}, "
                           f"found {choice!r:.80}", param="tool_choice")
    if not functions or choice == "none":
        return ToolPlan(tuple(functions), "none", None)
    chosen = [f["function"] for f in functions if choice in ("auto", "required") or f["function"]["name"] == choice]
    schemas = [_call_schema(f) for f in chosen]
    call = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    if choice == "auto":
        # free text that does not open with "{", or a valid call
        lark = f"start: call | text\ncall: %json {json.dumps(call)}\ntext: /[^{{](.|\\n)*/\n"
        constraint = Constraint.lark(lark)
    else:
        constraint = Constraint.json_schema(call, name=choice if choice != "required" else None)
    try:
        constraint.check()
    except UsageError as exc:
        raise RequestError(400, f"a tool's parameters cannot be used as a constraint: {exc}", param="tools") from None
    return ToolPlan(tuple(functions), choice, constraint)


def tool_calls(text: str, plan: ToolPlan) -> Optional[List[Dict[str, Any]]]:
    """The tool call an answer makes, in OpenAI's shape (None: the answer is not a call)."""
    if not plan.calls or not text.lstrip().startswith("{"):
        return None
    try:
        call = json.loads(text)
    except ValueError:
        return None
    if not isinstance(call, dict) or not isinstance(call.get("name"), str) or "arguments" not in call:
        return None
    return [{"id": "call_" + uuid.uuid4().hex[:24], "type": "function",
             "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])}}]
