#!/usr/bin/env python3
"""Tool calling against `edgert serve` with the official OpenAI Python client.

The model is given two tools (drive the robot, read a sensor) and must call one
(``tool_choice="required"``). edgert decodes the call under a grammar built from the tools'
parameter schemas, so ``tool_calls[0].function.arguments`` always parses and validates;
the example runs the tool, sends its result back as a ``role: tool`` message, and asks
the model to sum up in plain text.

    edgert serve BUNDLE --port 8080 &
    python examples/tool_calling.py --url http://127.0.0.1:8080/v1 "Drive two metres to the left."
"""

from __future__ import annotations

import argparse
import json
import sys

try:
    import openai
except ImportError:  # the client is not a dependency of edgert itself
    sys.exit("this example needs the OpenAI client: pip install openai")

TOOLS = [
    {"type": "function", "function": {
        "name": "drive", "description": "Drive the robot a distance in a direction.",
        "parameters": {"type": "object", "properties": {
            "direction": {"type": "string", "enum": ["forward", "back", "left", "right"]},
            "metres": {"type": "number", "minimum": 0, "maximum": 10}},
            "required": ["direction", "metres"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "read_sensor", "description": "Read one of the robot's sensors.",
        "parameters": {"type": "object", "properties": {"sensor": {"type": "string", "enum": ["range", "battery"]}},
                       "required": ["sensor"], "additionalProperties": False}}},
]


def run_tool(name: str, arguments: dict) -> dict:
    """The robot's side (simulated): what each tool returns."""
    if name == "drive":
        return {"ok": True, "moved_m": arguments["metres"], "direction": arguments["direction"]}
    return {"sensor": arguments["sensor"], "value": 1.8 if arguments["sensor"] == "range" else 0.76}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("request", nargs="?", default="Drive two metres to the left.")
    parser.add_argument("--url", default="http://127.0.0.1:8080/v1", help="the server's /v1 address")
    parser.add_argument("--model", help="model id (default: the server's first)")
    parser.add_argument("--deadline-ms", type=float, default=5000.0)
    parser.add_argument("--json", action="store_true", help="print what happened as JSON")
    args = parser.parse_args(argv)
    client = openai.OpenAI(base_url=args.url, api_key="edgert", max_retries=0)
    try:
        model = args.model or client.models.list().data[0].id
        history = [{"role": "user", "content": args.request}]
        first = client.chat.completions.create(model=model, messages=history, tools=TOOLS, tool_choice="required",
                                               max_tokens=64, extra_body={"deadline_ms": args.deadline_ms})
        message = first.choices[0].message
        if not message.tool_calls:  # the deadline cut the call short: edgert says so, never a broken call
            print(f"no tool call: {first.model_extra['edgert'].get('constraint')}", file=sys.stderr)
            return 1
        call = message.tool_calls[0]
        arguments = json.loads(call.function.arguments)  # always parses: decoded under the tool's schema
        result = run_tool(call.function.name, arguments)
        history += [{"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                    {"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)}]
        final = client.chat.completions.create(model=model, messages=history, tools=TOOLS, tool_choice="none",
                                               max_tokens=48, extra_body={"deadline_ms": args.deadline_ms})
    except openai.APIConnectionError:
        print(f"tool_calling: no edgert server at {args.url} (start one with: edgert serve BUNDLE)", file=sys.stderr)
        return 2
    except openai.APIStatusError as exc:
        print(f"tool_calling: the server refused the request: {exc.message}", file=sys.stderr)
        return 2
    summary = {"call": call.function.name, "arguments": arguments, "result": result,
               "reply": final.choices[0].message.content}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"call: {call.function.name}({json.dumps(arguments)}) -> {json.dumps(result)}")
        print(f"reply: {summary['reply']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
