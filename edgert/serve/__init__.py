"""A local OpenAI-compatible HTTP server around the Runtime, with deadlines and power limits.

Endpoints: ``POST /v1/chat/completions`` and ``POST /v1/completions`` (plain JSON or
server-sent events with ``"stream": true``), ``GET /v1/models``, ``GET /health`` and
``GET /metrics`` (Prometheus text format).

One request runs at a time (the runtime owns the CPU); up to ``queue_size`` more wait in a
FIFO. A full queue answers 503 with ``Retry-After``. A client that disconnects cancels its
request, whether it is waiting or running. Bad requests get a 4xx with an OpenAI-style JSON
error body, never a 500.

The modules, in the order a request meets them:

- ``protocol``: OpenAI request bodies to a checked ``edgert.request.Request`` (in a ``Job``),
  response and stream-chunk envelopes, errors as HTTP statuses. No FastAPI: it imports and
  tests without the ``serve`` extra.
- ``queue``: the ``Server``: admission (503 when full), the one worker thread that runs the
  runtime, expiry of jobs whose deadline passes while they wait, the ``Mailbox`` of events.
- ``metrics``: Prometheus counters and the ASGI middleware that counts responses.
- ``app``: the FastAPI routes, SSE streaming, ``serve`` and ``check_address``. FastAPI and
  uvicorn come with ``pip install edgert[serve]``; import ``app`` only when serving.
"""
