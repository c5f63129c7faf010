"""The Server: admission, the one worker thread that runs the runtime, expiry in the queue.

One request runs at a time (the runtime owns the CPU); up to ``queue_size`` more wait in a
FIFO, and a full queue answers 503 with ``Retry-After``. A job whose deadline passes while it
still waits is answered empty at its deadline instead of late. Nothing here depends on the
HTTP framework; ``app`` routes requests to it.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Deque, Dict, List, Optional, Tuple

from ..errors import UsageError
from ..runners.types import RETURN_MARGIN_S
from ..result import RuntimeResult
from ..runtime import Runtime
from . import protocol
from .metrics import Metrics
from .protocol import Job, RequestError

DEFAULT_QUEUE_SIZE = 4


class Mailbox:
    """Events for one request's coroutine, in order (used on the event loop only)."""

    def __init__(self) -> None:
        self._items: Deque[Tuple[str, Any]] = deque()
        self._ready = asyncio.Event()

    def put(self, item: Tuple[str, Any]) -> None:
        self._items.append(item)
        self._ready.set()

    def empty(self) -> bool:
        return not self._items

    def take(self) -> Tuple[str, Any]:
        item = self._items.popleft()
        if not self._items:
            self._ready.clear()
        return item

    async def wait(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._ready.wait(), timeout=timeout)
        except asyncio.TimeoutError:
            pass


def expires_at(job: Job) -> float:
    """When a job still waiting is answered for (``time.monotonic()``): at its deadline, less
    the margin the runtime keeps to return (inf without a deadline)."""
    return job.arrived + job.deadline_s - RETURN_MARGIN_S if job.deadline_s is not None else math.inf


class Server:
    """The request handling, independent of the HTTP framework's routing (see app.create_app)."""

    def __init__(self, runtime: Runtime, *, queue_size: int = DEFAULT_QUEUE_SIZE,
                 default_deadline_s: Optional[float] = None, model_id: Optional[str] = None):
        if queue_size < 0:
            raise UsageError(f"queue size must be 0 or more, found {queue_size}")
        self.runtime = runtime
        self.queue_size = queue_size
        self.default_deadline_s = default_deadline_s
        self.model_id = model_id or runtime.bundle.manifest.model_name
        #: the task sets a client may name besides the shipped ones: those the bundle was calibrated on
        self.task_sets = sorted({str(row.get("task_set")) for row in runtime.bundle.manifest.accuracy_table})
        self._variants = [v.name for v in runtime.bundle.variants]
        self.metrics = Metrics()
        self.started = time.time()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgert-runtime")
        self._admitted = 0  # waiting + running
        self._running = 0
        self._count_lock = threading.Lock()

    @property
    def auto_enabled(self) -> bool:
        """Whether requests may use strategy auto (and power_w / energy_j): a device profile."""
        return self.runtime.profile is not None

    def preload(self) -> Dict[str, float]:
        """Load the variants requests may use before the first arrives (loading would count
        against its deadline): all calibrated ones when the planner may choose, else the
        default, each with its constrained-decoding tokenizer (response_format and tools need
        it). Returns load time per variant in ms."""
        if self.auto_enabled:
            return self.runtime.preload(constraints=True)
        return self.runtime.preload([self.runtime.default_variant], constraints=True)

    def models(self) -> List[Dict[str, Any]]:
        return protocol.models(self.model_id, self.runtime.bundle.variants, int(self.started))

    def parse(self, kind: str, raw: bytes) -> Job:
        """A request body as a Job (RequestError: refused, with its 4xx)."""
        return protocol.parse(kind, raw, model_id=self.model_id, variants=self._variants,
                              default_deadline_s=self.default_deadline_s, has_profile=self.auto_enabled,
                              task_sets=self.task_sets)

    # ------------------------------------------------------------- queueing
    def admit(self, job: Job) -> None:
        """Count the job in, or refuse it with 503 and a Retry-After when the queue is full."""
        with self._count_lock:
            if self._admitted >= self.queue_size + 1:
                self.metrics.reject()
                wait_s = max(1, math.ceil(self.metrics.typical_latency_s() * self._admitted))
                raise RequestError(503, f"the server is busy: {self._admitted} requests admitted, queue holds "
                                   f"{self.queue_size}; retry after {wait_s} s", kind="server_busy",
                                   code="queue_full", headers={"Retry-After": str(wait_s)})
            self._admitted += 1

    def queue_depth(self) -> Tuple[int, int]:
        """(waiting, running)."""
        with self._count_lock:
            return self._admitted - self._running, self._running

    def submit(self, job: Job) -> "asyncio.Future[Optional[RuntimeResult]]":
        return asyncio.wrap_future(self._executor.submit(self._run, job))

    def expire(self, job: Job) -> bool:
        """Give up on a job still waiting at its deadline (True), unless it has just started."""
        with self._count_lock:
            if job.started is not None:
                return False
            job.expired_at = time.monotonic()
            job.cancel.cancel()
        latency_s = job.expired_at - job.arrived
        self.metrics.finished(None, latency_s, 0.0, False)
        self.metrics.count_deadline(latency_s <= job.deadline_s)
        return True

    def _run(self, job: Job) -> Optional[RuntimeResult]:
        """In the worker thread: generate, unless the client left or the deadline passed while
        the job waited."""
        with self._count_lock:
            if job.expired_at is not None or job.cancel.cancelled:
                self._admitted -= 1
                if job.expired_at is None:
                    self.metrics.finished(None, time.monotonic() - job.arrived, 0.0, True)
                return None
            job.started = time.monotonic()
            self._running += 1
        result: Optional[RuntimeResult] = None
        try:
            on_token = (lambda piece, _tok: job.emit(("token", piece))) if job.streams_tokens else None
            result = self.runtime.run(job.request, on_token=on_token, cancel_token=job.cancel)
            return result
        finally:
            finished = time.monotonic()
            self.metrics.finished(result, finished - job.arrived, finished - job.started, job.cancel.cancelled)
            with self._count_lock:
                self._running -= 1
                self._admitted -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
