"""Typed errors raised by the core. The server maps each to an OpenAI error in one place."""

from __future__ import annotations


class ApplianceError(Exception):
    """Base of every error the appliance reports to a user."""

    status = 500
    error_type = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidRequest(ApplianceError):
    """The request is malformed or asks for something impossible."""

    status = 400
    error_type = "invalid_request_error"


class ContextOverflow(InvalidRequest):
    """Prompt plus requested tokens do not fit in the context. Never truncated silently."""

    code = "context_length_exceeded"


class Unauthorized(ApplianceError):
    status = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class Forbidden(ApplianceError):
    """Refused whoever asks: a Host or an Origin that is not allowed."""

    status = 403
    error_type = "permission_error"

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


class RequestTooLarge(InvalidRequest):
    """The request body is over the configured size."""

    status = 413
    code = "request_too_large"


class ModelNotFound(ApplianceError):
    status = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class QueueFull(ApplianceError):
    """Too many requests are already waiting."""

    status = 429
    error_type = "rate_limit_error"
    code = "queue_full"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TooManyRequests(QueueFull):
    """One API key already has as many requests in flight as it may."""

    code = "too_many_concurrent_requests"


class ModelLoading(ApplianceError):
    """The model is still loading (or failed to load)."""

    status = 503
    error_type = "server_error"
    code = "model_loading"


class ShuttingDown(ApplianceError):
    """The daemon is stopping: it takes no new work, and work still waiting when the drain ends is
    refused with this."""

    status = 503
    error_type = "server_error"
    code = "shutting_down"


class ModelLoadFailed(ApplianceError):
    """The model file could not be loaded."""

    status = 503
    error_type = "server_error"
    code = "model_load_failed"


class DraftModelError(ModelLoadFailed):
    """The configured draft model is missing, unreadable, or cannot draft for its model (another
    vocabulary): a setting to fix, said in one line (the model answers 503 with it; `serve` exits)."""


class EngineFailure(ApplianceError):
    """llama.cpp reported an error while generating."""

    status = 500
    error_type = "server_error"
    code = "engine_failure"


class InternalError(ApplianceError):
    """A bug: reported to the client without details (they are in the daemon's log)."""

    status = 500
    error_type = "server_error"
    code = "internal_error"


class ModelTooLarge(InvalidRequest):
    """The model cannot fit this machine's memory budget even with nothing else loaded."""

    code = "model_too_large"


class UserError(Exception):
    """A problem the user can fix (a bad setting, a port in use): the command line prints it as one line
    and exits 1. Here, not in the CLI, so the daemon's start-up may raise it without importing the CLI."""
