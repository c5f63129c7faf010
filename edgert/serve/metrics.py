"""Counters for /metrics in Prometheus' text format, and the middleware that counts responses.

Prometheus' text exposition format, version 0.0.4. No FastAPI here: ``CountRequests`` is a
plain ASGI wrapper.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Deque, Dict, Optional, Tuple

from ..result import RuntimeResult

LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class Metrics:
    """Counters for /metrics, in Prometheus' text exposition format (version 0.0.4)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Dict[Tuple[str, int], int] = {}
        self.deadline = {"met": 0, "missed": 0}
        self.tokens_out = 0
        self.tokens_in = 0
        self.busy_s = 0.0
        self.energy_j: Dict[str, float] = {}
        self.rejected = 0
        self.cancelled = 0
        self.latency_buckets = [0] * len(LATENCY_BUCKETS_S)
        self.latency_sum_s = 0.0
        self.latency_count = 0
        self.recent_latency_s: Deque[float] = deque(maxlen=32)

    def request(self, endpoint: str, status: int) -> None:
        with self._lock:
            self.requests[(endpoint, status)] = self.requests.get((endpoint, status), 0) + 1

    def finished(self, result: Optional[RuntimeResult], latency_s: float, busy_s: float, cancelled: bool) -> None:
        with self._lock:
            self.busy_s += busy_s
            self.cancelled += int(cancelled)
            self.recent_latency_s.append(latency_s)
            self.latency_sum_s += latency_s
            self.latency_count += 1
            for i, bound in enumerate(LATENCY_BUCKETS_S):
                if latency_s <= bound:
                    self.latency_buckets[i] += 1
            if result is None:
                return
            self.tokens_out += result.tokens_out
            self.tokens_in += result.generation.tokens_in
            if result.deadline_met is not None and not cancelled:
                self.deadline["met" if result.deadline_met else "missed"] += 1
            if result.energy_j is not None:
                key = result.energy_provenance
                self.energy_j[key] = self.energy_j.get(key, 0.0) + result.energy_j

    def reject(self) -> None:
        with self._lock:
            self.rejected += 1

    def count_deadline(self, met: bool) -> None:
        with self._lock:
            self.deadline["met" if met else "missed"] += 1

    def typical_latency_s(self) -> float:
        with self._lock:
            recent = sorted(self.recent_latency_s)
        return recent[len(recent) // 2] if recent else 1.0

    def render(self, queue_depth: int, running: int) -> str:
        with self._lock:
            lines = [
                "# HELP edgert_requests_total HTTP requests by endpoint and status code.",
                "# TYPE edgert_requests_total counter",
            ]
            for (endpoint, status), count in sorted(self.requests.items()):
                lines.append(f'edgert_requests_total{{endpoint="{endpoint}",code="{status}"}} {count}')
            lines += ["# HELP edgert_deadline_total Generations with a deadline, by whether the answer came in time.",
                      "# TYPE edgert_deadline_total counter"]
            lines += [f'edgert_deadline_total{{result="{k}"}} {v}' for k, v in self.deadline.items()]
            lines += ["# HELP edgert_tokens_generated_total Tokens generated (all samples).",
                      "# TYPE edgert_tokens_generated_total counter", f"edgert_tokens_generated_total {self.tokens_out}",
                      "# HELP edgert_prompt_tokens_total Prompt tokens evaluated.",
                      "# TYPE edgert_prompt_tokens_total counter", f"edgert_prompt_tokens_total {self.tokens_in}",
                      "# HELP edgert_busy_seconds_total Time spent generating.",
                      "# TYPE edgert_busy_seconds_total counter", f"edgert_busy_seconds_total {self.busy_s:.6f}",
                      "# HELP edgert_tokens_per_second Generated tokens per second of generation time, since start.",
                      "# TYPE edgert_tokens_per_second gauge",
                      f"edgert_tokens_per_second {self.tokens_out / self.busy_s if self.busy_s else 0.0:.3f}",
                      "# HELP edgert_energy_joules_total Energy of generations, by provenance (measured or estimated).",
                      "# TYPE edgert_energy_joules_total counter"]
            lines += [f'edgert_energy_joules_total{{provenance="{k}"}} {v:.6f}' for k, v in sorted(self.energy_j.items())]
            lines += ["# HELP edgert_rejected_total Requests refused because the queue was full (503).",
                      "# TYPE edgert_rejected_total counter", f"edgert_rejected_total {self.rejected}",
                      "# HELP edgert_cancelled_total Generations cancelled because the client disconnected.",
                      "# TYPE edgert_cancelled_total counter", f"edgert_cancelled_total {self.cancelled}",
                      "# HELP edgert_queue_depth Requests waiting for the runtime.",
                      "# TYPE edgert_queue_depth gauge", f"edgert_queue_depth {queue_depth}",
                      "# HELP edgert_running Requests being generated (0 or 1).",
                      "# TYPE edgert_running gauge", f"edgert_running {running}",
                      "# HELP edgert_request_latency_seconds Arrival to answer, queue time included.",
                      "# TYPE edgert_request_latency_seconds histogram"]
            for bound, count in zip(LATENCY_BUCKETS_S, self.latency_buckets):
                lines.append(f'edgert_request_latency_seconds_bucket{{le="{bound:g}"}} {count}')
            lines += [f'edgert_request_latency_seconds_bucket{{le="+Inf"}} {self.latency_count}',
                      f"edgert_request_latency_seconds_sum {self.latency_sum_s:.6f}",
                      f"edgert_request_latency_seconds_count {self.latency_count}"]
        return "\n".join(lines) + "\n"


class CountRequests:
    """ASGI middleware counting responses per endpoint and status (a plain ASGI wrapper, not
    Starlette's BaseHTTPMiddleware, which gets in the way of streaming and disconnects)."""

    KNOWN = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics")

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = {"code": 499}  # nothing sent: the client left first

        async def send_counted(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            path = scope.get("path", "")
            endpoint = next((k for k in self.KNOWN if path == k or path.startswith(k + "/")), "other")
            self.metrics.request(endpoint, status["code"])
