"""One place that turns errors into OpenAI-shaped JSON with the right status."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from appliance.errors import ApplianceError, InternalError, InvalidRequest, QueueFull

log = logging.getLogger(__name__)


MAX_MESSAGE_CHARS = 1000
"""Error messages quote what the client sent (a model name, a duration); a huge value is cut."""


def clip(message: str) -> str:
    """``message``, cut to MAX_MESSAGE_CHARS."""
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    rest = f"... ({len(message)} characters in all)"
    return message[: MAX_MESSAGE_CHARS - len(rest)] + rest


def error_body(
    message: str, error_type: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": clip(message), "type": error_type, "param": param, "code": code}}


def appliance_error_body(exc: ApplianceError) -> dict[str, Any]:
    return error_body(exc.message, exc.error_type, param=exc.param, code=exc.code)


# Anthropic's error types by status (https://docs.anthropic.com/en/api/errors).
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                    503: "overloaded_error", 529: "overloaded_error"}  # fmt: skip


def dialect(path: str) -> str:
    """Which API a path belongs to, for the shape of its errors: "ollama", "anthropic" or "openai"."""
    if path.startswith("/api/"):
        return "ollama"
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return "anthropic"
    return "openai"


def dialect_error_body(path: str, status: int, exc: ApplianceError) -> dict[str, Any]:
    """``exc`` in the error shape of the API ``path`` belongs to: Ollama's ``{"error": "..."}``,
    Anthropic's ``{"type": "error", "error": {...}}``, else OpenAI's."""
    kind = dialect(path)
    if kind == "ollama":
        return {"error": clip(exc.message)}
    if kind == "anthropic":
        fallback = "api_error" if status >= 500 else "invalid_request_error"
        error_type = _ANTHROPIC_TYPES.get(status, fallback)
        return {"type": "error", "error": {"type": error_type, "message": clip(exc.message)}}
    return appliance_error_body(exc)


def error_response(path: str, exc: ApplianceError, headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON response for ``exc`` on ``path``, in that API's shape, with Retry-After for a 429."""
    if isinstance(exc, QueueFull):
        headers = {"Retry-After": str(exc.retry_after_s), **(headers or {})}
    return JSONResponse(dialect_error_body(path, exc.status, exc), status_code=exc.status, headers=headers)


def _union_member(part: Any) -> bool:
    """Whether a part of an error's location names a member of a union (``str``, ``list[str]``,
    ``literal['','json']``) rather than a field: "stop: Input should be a valid string", not
    "stop.str: ..."."""
    return isinstance(part, str) and (part in ("str", "int", "float", "bool") or "[" in part)


def validation_message(errors: Sequence[Any]) -> tuple[str, str | None]:
    """One readable line (and the offending parameter) from pydantic's validation errors."""
    if not errors:
        return "invalid request", None
    first = errors[0]
    if first.get("type") == "json_invalid":
        return "the request body is not valid JSON", None
    loc = [str(p) for p in first.get("loc", ()) if p != "body" and not _union_member(p)]
    param = ".".join(loc) or None
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if first.get("type") == "missing":
        message = f"missing required field '{param}'"
    elif param:
        message = f"{param}: {message}"
    return message, param


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers; after this no error reaches a client as a traceback or a bare 500."""

    @app.exception_handler(ApplianceError)
    async def _appliance(request: Request, exc: ApplianceError) -> JSONResponse:
        return error_response(request.url.path, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = validation_message(exc.errors())
        return error_response(request.url.path, InvalidRequest(message, param=param))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        # The router's own answers (no such route, wrong method) in the shape of the API asked.
        error = ApplianceError(str(exc.detail))
        error.status = exc.status_code
        error.error_type = "invalid_request_error" if exc.status_code < 500 else "server_error"
        error.code = "not_found" if exc.status_code == 404 else None
        return error_response(request.url.path, error, headers=dict(exc.headers) if exc.headers else None)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return error_response(request.url.path, InternalError("internal error; see the daemon's log"))
