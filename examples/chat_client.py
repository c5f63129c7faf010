#!/usr/bin/env python3
"""A desktop chat client for `edgert serve`, using the official OpenAI Python client.

Start a server, then chat with it:

    edgert serve BUNDLE --port 8080 &
    python examples/chat_client.py --url http://127.0.0.1:8080/v1 --deadline-ms 3000

Replies stream token by token. Every reply must arrive within --deadline-ms (edgert's
extension field, sent through ``extra_body``); after each reply the client shows what the
server reports in its ``edgert`` field: latency, tokens, whether the deadline was met.
Type /quit (or Ctrl-D) to leave. ``--once TEXT`` sends one message and exits, for scripts.
"""

from __future__ import annotations

import argparse
import sys

try:
    import openai
except ImportError:  # the client is not a dependency of edgert itself
    sys.exit("this example needs the OpenAI client: pip install openai")


def reply(client, model: str, history: list, deadline_ms: float, max_tokens: int, out=sys.stdout) -> dict:
    """Stream one reply to ``history``; append it; return the server's telemetry."""
    stream = client.chat.completions.create(model=model, messages=history, stream=True, max_tokens=max_tokens,
                                            extra_body={"deadline_ms": deadline_ms})
    text, telemetry = [], {}
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text.append(chunk.choices[0].delta.content)
            out.write(chunk.choices[0].delta.content)
            out.flush()
        telemetry = (chunk.model_extra or {}).get("edgert") or telemetry
    out.write("\n")
    history.append({"role": "assistant", "content": "".join(text)})
    return telemetry


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8080/v1", help="the server's /v1 address")
    parser.add_argument("--model", help="model id (default: the server's first)")
    parser.add_argument("--deadline-ms", type=float, default=3000.0, help="deadline of each reply")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--system", default="You are a concise, helpful assistant.")
    parser.add_argument("--once", metavar="TEXT", help="send one message, print the reply and exit")
    args = parser.parse_args(argv)
    client = openai.OpenAI(base_url=args.url, api_key="not-needed", max_retries=1)
    try:
        model = args.model or client.models.list().data[0].id
    except openai.APIConnectionError:
        print(f"no edgert server at {args.url} (start one with: edgert serve BUNDLE)", file=sys.stderr)
        return 2
    history = [{"role": "system", "content": args.system}]
    while True:
        if args.once is not None:
            text = args.once
        else:
            try:
                text = input("you> ").strip()
            except EOFError:
                return 0
            if text in ("/quit", "/exit"):
                return 0
            if not text:
                continue
        history.append({"role": "user", "content": text})
        print(f"{model}> ", end="", flush=True)
        try:
            t = reply(client, model, history, args.deadline_ms, args.max_tokens)
        except openai.APIStatusError as exc:  # a 4xx or 503 from the server: say why, keep chatting
            history.pop()
            print(f"\n[server refused: {exc.status_code} {exc.message}]", file=sys.stderr)
            if args.once is not None:
                return 1
            continue
        met = "met" if t.get("deadline_met") else "MISSED"
        print(f"  [{t.get('latency_ms', 0):.0f} ms, {t.get('tokens_out', 0)} tokens, deadline {met}"
              f"{', cut short' if t.get('deadline_cut') else ''}]", file=sys.stderr)
        if args.once is not None:
            return 0 if t.get("deadline_met") else 1


if __name__ == "__main__":
    sys.exit(main())
