"""Who may talk to the server: the API key, the refusal of an open bind, CORS origins.

- An API key (``edgert serve --api-key KEY``, or ``EDGERT_API_KEY``): every route but
  ``/health`` then needs ``Authorization: Bearer KEY``, compared in constant time; a wrong or
  missing key gets 401 with OpenAI's error object and ``WWW-Authenticate: Bearer``.
- ``check_exposure``: listening on an address other hosts can reach (anything but
  127.0.0.0/8, ::1 and ``localhost``) without a key is refused unless the user says
  ``--insecure-no-auth``: a desktop app's local server must not become the network's.
- ``check_origins``: the browser origins CORS allows (none unless given; preflights are
  answered by Starlette's CORSMiddleware, before the key is asked for, since browsers send
  them without credentials).

No FastAPI here: ``RequireKey`` is a plain ASGI wrapper, like ``metrics.CountRequests``.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import re
from typing import Iterable, Mapping, Optional, Tuple

from ..errors import UsageError

#: the environment variable read when no --api-key is given
API_KEY_ENV = "EDGERT_API_KEY"
#: routes open without the key (a supervisor's liveness probe)
OPEN_PATHS = frozenset({"/health"})
_KEY = re.compile(r"^[\x21-\x7e]+$")  # what an HTTP header carries unmangled: visible ASCII, no spaces
_ORIGIN = re.compile(r"^[a-z][a-z0-9+.-]*://[^/\s?#]+$", re.IGNORECASE)


def resolve_api_key(explicit: Optional[str], environ: Mapping[str, str] = os.environ) -> Optional[str]:
    """The key to require: the option given, else ``EDGERT_API_KEY`` (empty there: none);
    UsageError for a key an Authorization header cannot carry."""
    if explicit is None:
        explicit = environ.get(API_KEY_ENV) or None
        where = API_KEY_ENV
    else:
        where = "--api-key"
    return None if explicit is None else check_api_key(explicit, where)


def check_api_key(key: str, where: str = "api_key") -> str:
    """``key`` if an Authorization header can carry it unchanged; UsageError if not."""
    if not isinstance(key, str) or not _KEY.match(key):
        found = "an empty key" if not key else "spaces or characters outside visible ASCII"
        raise UsageError(f"{where}: expected a key of visible ASCII characters without spaces, found {found}")
    return key


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only: 127.0.0.0/8, ::1 (also IPv4-mapped) or localhost."""
    name = host.strip().strip("[]")
    if name.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name.split("%", 1)[0])  # an IPv6 zone (fe80::1%eth0) names no host
    except ValueError:
        return False  # a host name (or "", every interface): it may resolve to anything
    mapped = getattr(address, "ipv4_mapped", None)
    return bool((mapped or address).is_loopback)


def check_exposure(host: str, api_key: Optional[str], insecure: bool = False) -> Optional[str]:
    """Raise UsageError when listening on ``host`` would serve the network without a key,
    unless ``insecure`` (``--insecure-no-auth``) says so on purpose; then return the warning
    to show (None when nothing is exposed without a key)."""
    if api_key or is_loopback(host):
        return None
    if insecure:
        return (f"no API key (--insecure-no-auth): anyone who can reach {host} may use this server")
    raise UsageError(f"--host {host}: expected a loopback address (127.0.0.1, ::1, localhost) when no API key is "
                     f"set, found one other machines can reach; set --api-key (or {API_KEY_ENV}), "
                     f"or pass --insecure-no-auth to serve it without one")


def check_origins(origins: Iterable[str]) -> Tuple[str, ...]:
    """The CORS origins as given (``scheme://host[:port]``, or ``*``); UsageError for one a
    browser never sends (a path, a trailing slash, no scheme)."""
    out = tuple(origins)
    for origin in out:
        if origin != "*" and not _ORIGIN.match(origin):
            raise UsageError(f"--cors-origin: expected an origin like http://localhost:3000 (scheme, host and "
                             f"port, no path), found {origin!r}")
    return out


def _unauthorized(message: str) -> Tuple[bytes, list]:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                 "code": "invalid_api_key"}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"www-authenticate", b"Bearer")]
    return body, headers


class RequireKey:
    """ASGI middleware: HTTP requests need ``Authorization: Bearer <key>`` except on
    ``OPEN_PATHS``; otherwise 401 with OpenAI's error object (a plain ASGI wrapper, so
    streaming and disconnects pass through untouched)."""

    def __init__(self, app, api_key: str):
        self.app, self._key = app, check_api_key(api_key).encode()

    def _allowed(self, scope) -> Optional[str]:
        """None when the request may pass, else why not."""
        if scope.get("path", "") in OPEN_PATHS:
            return None
        values = [v for k, v in scope.get("headers", ()) if k.lower() == b"authorization"]
        if not values:
            return "missing API key: send the header Authorization: Bearer <key>"
        scheme, _, token = values[0].strip().partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            return "malformed Authorization header: expected Bearer <key>"
        if len(values) > 1 or not hmac.compare_digest(token.strip(), self._key):
            return "incorrect API key provided"
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):  # lifespan
            return await self.app(scope, receive, send)
        refused = self._allowed(scope)
        if refused is None:
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":  # edgert serves none; refused before it is accepted all the same
            await send({"type": "websocket.close", "code": 1008})
            return
        body, headers = _unauthorized(refused)
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": body})
