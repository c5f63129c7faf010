"""The FastAPI application: routes, server-sent event streaming, ``serve``, ``check_address``.

``create_app(server, api_key=..., cors_origins=...)`` wraps the routes in, outermost first:
CORS (only for the origins given: preflights are answered there, without the key), the
request counter, and the API key check (``security``). Bodies pass ``guard.load_body``
before ``protocol.parse``, so no shape of body gets a 500.

The routes read the body, hand it to the Server (``queue``) and wait for the worker while
watching for a disconnect (which cancels the job) and for the deadline passing in the queue
(answered empty). FastAPI and uvicorn come with ``pip install edgert[serve]``; this module
imports them, so import it only when serving (the CLI does so lazily).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import Iterable, Optional

from ..errors import BackendUnavailableError, UsageError
from . import protocol, responses
from .guard import load_body
from .metrics import CountRequests
from .protocol import Job, RequestError
from .queue import Mailbox, Server, expires_at
from .security import RequireKey, check_api_key, check_exposure, check_origins, resolve_api_key

try:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
    from starlette.middleware.cors import CORSMiddleware
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise BackendUnavailableError("edgert serve is unavailable: install edgert[serve] (fastapi, uvicorn)") from exc

#: largest request body read (a 2048-token context is a few kB of text; this leaves room for
#: long message histories while a runaway client cannot make the server buffer gigabytes)
MAX_BODY_BYTES = 8 << 20
DISCONNECT_POLL_S = 0.05
#: what serving takes, in one import (Server is the queue's)
__all__ = ["MAX_BODY_BYTES", "Server", "check_address", "check_exposure", "check_origins", "create_app",
           "resolve_api_key", "serve"]


def _respond(err: RequestError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def create_app(server: Server, *, api_key: Optional[str] = None, cors_origins: Iterable[str] = ()) -> FastAPI:
    """The FastAPI application serving ``server``.

    api_key: when set, every route but /health needs ``Authorization: Bearer <api_key>``
    (401 otherwise). cors_origins: the browser origins allowed to call it (none: no CORS
    headers at all)."""
    origins = check_origins(cors_origins)
    if api_key is not None:
        check_api_key(api_key)  # now, not at the first request (Starlette builds middleware lazily)
    app = FastAPI(title="edgert", description="OpenAI-compatible API with deadlines and power limits",
                  version="1", docs_url=None, redoc_url=None)
    app.state.server = server

    # add_middleware wraps what is there: the last added runs first
    if api_key is not None:
        app.add_middleware(RequireKey, api_key=api_key)
    app.add_middleware(CountRequests, metrics=server.metrics)  # 401s are counted too
    if origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(origins), allow_methods=["GET", "POST"],
                           allow_headers=["*"], expose_headers=["Retry-After"], allow_credentials=False)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException):
        kind = "not_found" if exc.status_code == 404 else "invalid_request_error"
        return _respond(RequestError(exc.status_code, str(exc.detail), kind=kind))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError):
        return _respond(RequestError(400, f"invalid request: {exc.errors()!r:.200}"))

    @app.get("/health")
    async def health():
        waiting, running = server.queue_depth()
        return {"status": "ok", "model": server.model_id, "queue_depth": waiting, "running": running,
                "loaded": server.runtime.loaded(), "uptime_s": round(time.time() - server.started, 3)}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": server.models()}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        for m in server.models():
            if m["id"] == model_id:
                return m
        return _respond(RequestError(404, f"model {model_id!r} does not exist", code="model_not_found"))

    @app.get("/metrics")
    async def metrics():
        waiting, running = server.queue_depth()
        return PlainTextResponse(server.metrics.render(waiting, running),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    async def complete(kind: str, request: Request):
        try:
            raw = await _read_body(request)
            load_body(raw)  # any shape of body is a 400 here, before parse reads the same bytes
            job = server.parse(kind, raw)
            server.admit(job)
        except RequestError as exc:
            return _respond(exc)
        job.loop = asyncio.get_running_loop()
        if job.stream:
            job.events = Mailbox()
        future = server.submit(job)
        future.add_done_callback(lambda f: job.emit(("done", None)))
        if not job.stream:
            outcome = await _wait(server, job, request, future.done,
                                  lambda timeout: asyncio.wait({future}, timeout=timeout))
            if outcome == "disconnected":
                return _disconnected()
            if outcome == "expired":
                return JSONResponse(responses.body(job, None))
            try:
                result = future.result()
            except Exception as exc:  # noqa: BLE001 - each error becomes its HTTP answer
                return _respond(protocol.error_for(exc))
            return JSONResponse(responses.body(job, result, server.runtime.token_bytes))
        return await _stream(server, job, future, request)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await complete("chat", request)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await complete("completion", request)

    return app


async def _read_body(request: Request) -> bytes:
    """The request body, refused with 413 beyond MAX_BODY_BYTES (before or while reading)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise RequestError(413, f"the request body must be at most {MAX_BODY_BYTES} bytes, found {declared}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise RequestError(413, f"the request body must be at most {MAX_BODY_BYTES} bytes, found more")
        chunks.append(chunk)
    return b"".join(chunks)


def _disconnected() -> JSONResponse:
    return JSONResponse({"error": {"message": "client disconnected", "type": "cancelled"}}, status_code=499)


async def _wait(server: Server, job: Job, request: Request, ready, waiter) -> str:
    """Wait until ``ready()`` ("ready"), sleeping in ``await waiter(timeout)`` (which returns
    early when ready); meanwhile cancel the job if the client disconnects ("disconnected") or
    answer for it if its deadline passes while it still waits in the queue ("expired")."""
    expire_at = expires_at(job)
    while not ready():
        timeout = DISCONNECT_POLL_S
        if job.started is None:
            timeout = max(0.0, min(timeout, expire_at - time.monotonic()))
        await waiter(timeout)
        if ready():
            break
        if job.started is None and time.monotonic() >= expire_at and server.expire(job):
            return "expired"
        if await request.is_disconnected():
            job.cancel.cancel()
            return "disconnected"
    return "ready"


async def _next_event(server: Server, job: Job, request: Request) -> str:
    return await _wait(server, job, request, lambda: not job.events.empty(), job.events.wait)


async def _stream(server: Server, job: Job, future, request: Request):
    """Server-sent events. The first event is awaited before answering, so an error that
    happens before any token (a prompt longer than the context) is still a 4xx."""
    outcome = await _next_event(server, job, request)
    if outcome == "disconnected":
        return _disconnected()
    first = job.events.take() if outcome == "ready" else ("done", None)  # expired: nothing ran
    if outcome == "ready" and first[0] == "done" and future.exception() is not None:
        return _respond(protocol.error_for(future.exception()))

    async def events():
        event, opened = first, False
        try:
            while event[0] == "token":
                yield responses.chunk(job, text=event[1], first=not opened)
                opened = True
                if await _next_event(server, job, request) == "disconnected":
                    return
                event = job.events.take()
            exc = future.exception() if future.done() else None
            if exc is not None:  # after tokens were sent the status is already 200: report it in the stream
                yield responses.stream_error(protocol.error_for(exc))
                return
            result = future.result() if outcome == "ready" else None
            # nothing streamed (strategies answer at the end, tool calls and fallbacks are
            # settled at the end, an expired job): each answer whole, then the finish
            for event_text in responses.final_chunks(job, result, server.runtime.token_bytes, opened):
                yield event_text
        finally:
            if not future.done():  # the client went away mid-stream (the generator was closed)
                job.cancel.cancel()

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def check_address(host: str, port: int) -> None:
    """Raise UsageError unless the server could listen on host:port (taken, or not this host's)."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise UsageError(f"--host/--port: expected an address edgert can listen on, found {host}:{port} "
                         f"unavailable ({os.strerror(exc.errno) if exc.errno else exc})") from None


def serve(server: Server, host: str = "127.0.0.1", port: int = 8080, log_level: str = "warning", *,
          api_key: Optional[str] = None, cors_origins: Iterable[str] = ()) -> None:
    """Run the server until interrupted (Ctrl-C); api_key and cors_origins as in create_app."""
    import uvicorn

    try:
        uvicorn.run(create_app(server, api_key=api_key, cors_origins=cors_origins), host=host, port=port,
                    log_level=log_level)
    finally:
        server.close()
