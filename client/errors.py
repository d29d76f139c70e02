"""What can go wrong talking to the daemon, as types: callers catch :class:`ClientError` (or one of its
kinds) and never look at HTTP status codes or message text."""

from __future__ import annotations

import json
from typing import Any

import httpx


class ClientError(Exception):
    """Any failure reaching or asking the daemon; ``str()`` is one readable line."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class DaemonUnreachable(ClientError):
    """No answer: nothing listens, the connection broke, or it timed out."""

    def __init__(self, url: str, cause: Exception) -> None:
        super().__init__(f"{url}: {type(cause).__name__}")
        self.url = url
        # Nothing listens there (as opposed to a connection that broke or timed out).
        self.refused = isinstance(cause, httpx.ConnectError)

    @property
    def hint(self) -> str:
        """One line for a person: what to do when nothing listens, else what broke."""
        if self.refused:
            return f"no daemon answers at {self.url}: start one with `appliance serve`"
        return self.message


class NotADaemon(ClientError):
    """Something answered, but not in JSON: not an appliance daemon (or not its API)."""

    def __init__(self, url: str, status: int) -> None:
        super().__init__(f"{url}: not an appliance daemon (answered {status})")
        self.status = status


class ErrorReply(ClientError):
    """The daemon answered with an error (a 4xx or 5xx, or an error event in a stream that had begun).

    ``status`` is None for an error inside a stream; ``code`` and ``error_type`` are the error's, where its
    shape has them."""

    def __init__(
        self, message: str, status: int | None, code: str | None = None, error_type: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.error_type = error_type


class AuthFailed(ErrorReply):
    """401: the API key is missing or wrong."""


class ContextFull(ErrorReply):
    """The conversation no longer fits the model's context (OpenAI's ``context_length_exceeded``)."""


def error_reply(error: Any, status: int | None, fallback: str) -> ErrorReply:
    """The typed error for an error object in any of the daemon's shapes: OpenAI's and Anthropic's
    ``{"message", "type", "code"}``, Ollama's bare string, FastAPI's ``detail``."""
    message, code, kind = fallback, None, None
    if isinstance(error, dict):
        message = str(error.get("message") or fallback)
        code = error.get("code") if isinstance(error.get("code"), str) else None
        kind = error.get("type") if isinstance(error.get("type"), str) else None
    elif isinstance(error, str) and error:
        message = error
    if code == "context_length_exceeded":
        return ContextFull(message, status, code, kind)
    if status == 401:
        return AuthFailed(message, status, code, kind)
    return ErrorReply(message, status, code, kind)


def from_body(url: str, status: int, body: bytes) -> ErrorReply | NotADaemon:
    """The error an answer with ``status`` >= 400 and ``body`` stands for."""
    try:
        data = json.loads(body)
    except ValueError:
        if status == 401:
            return AuthFailed(f"{url}: the API key is missing or wrong (--api-key)", status)
        return NotADaemon(url, status)
    error = data.get("error", data.get("detail")) if isinstance(data, dict) else None
    if status == 401 and not isinstance(error, (dict, str)):
        return AuthFailed(f"{url}: the API key is missing or wrong (--api-key)", status)
    return error_reply(error, status, f"the daemon answered {status}")
