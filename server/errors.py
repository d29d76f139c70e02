"""One place that turns errors into OpenAI-shaped JSON with the right status."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from appliance.errors import ApplianceError, QueueFull

log = logging.getLogger(__name__)


def error_body(
    message: str, error_type: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def appliance_error_body(exc: ApplianceError) -> dict[str, Any]:
    return error_body(exc.message, exc.error_type, param=exc.param, code=exc.code)


def validation_message(errors: Sequence[Any]) -> tuple[str, str | None]:
    """One readable line (and the offending parameter) from pydantic's validation errors."""
    if not errors:
        return "invalid request", None
    first = errors[0]
    if first.get("type") == "json_invalid":
        return "the request body is not valid JSON", None
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
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
    async def _appliance(_: Request, exc: ApplianceError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, QueueFull) else None
        return JSONResponse(appliance_error_body(exc), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = validation_message(exc.errors())
        return JSONResponse(error_body(message, "invalid_request_error", param=param), status_code=400)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        code = "not_found" if exc.status_code == 404 else None
        return JSONResponse(error_body(str(exc.detail), kind, code=code), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return JSONResponse(
            error_body("internal error; see the daemon's log", "server_error"), status_code=500
        )
