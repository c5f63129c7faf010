"""The error a request gets: an HTTP status and OpenAI's error object. No FastAPI here."""

from __future__ import annotations

from typing import Any, Dict, Optional


class RequestError(Exception):
    """A request the server refuses: HTTP status, OpenAI error type and the offending field."""

    def __init__(self, status: int, message: str, *, param: Optional[str] = None, code: Optional[str] = None,
                 kind: str = "invalid_request_error", headers: Optional[Dict[str, str]] = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind
        self.headers = headers or {}

    def body(self) -> Dict[str, Any]:
        """OpenAI's error object."""
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}
