"""Reloading the configuration of the running daemon: on SIGHUP, or `POST /appliance/v1/reload`.

The configuration is read again as `serve` read it (config.toml, the environment, and the flags `serve`
was given, which still win) and validated; a configuration that does not load is logged and the running
one stays: the daemon never dies of a reload. What can change live is applied by the callables in
``app.state.reloaders``, in order, after ``app.state.settings`` is replaced; routes read
``request.app.state.settings`` on each request, so they see the new settings at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request

from appliance.config import Settings
from appliance.errors import InvalidRequest
from appliance.keys import KeyFileError, accepted_keys
from appliance.reconfigure import Reconciled, reconcile
from server.security import exposure_problem

log = logging.getLogger("appliance.daemon")
router = APIRouter(prefix="/appliance/v1")

Reloader = Callable[[Settings], None]


class ReloadFailed(InvalidRequest):
    """The configuration read again is invalid; the running one stays."""

    code = "invalid_configuration"


def reload_configuration(app: FastAPI) -> Reconciled:
    """Read the configuration again and apply it; ReloadFailed (logged, nothing changed) when it is invalid
    or this app has no way to read it (an app not started by `appliance serve`)."""
    load: Callable[[], Settings] | None = getattr(app.state, "load_settings", None)
    if load is None:
        raise ReloadFailed("this server was not started by `appliance serve`; it has nothing to reload")
    try:
        loaded = load()
    except Exception as exc:  # whatever the file holds, the daemon keeps serving
        log.error("configuration not reloaded, the running one stays: %s", exc)
        raise ReloadFailed(f"configuration not reloaded: {exc}") from None
    result = reconcile(app.state.settings, loaded)
    problem = _refusal(result.settings)
    if problem is not None:
        log.error("configuration not reloaded, the running one stays: %s", problem)
        raise ReloadFailed(f"configuration not reloaded: {problem}")
    app.state.settings = result.settings
    reloaders: list[Reloader] = app.state.reloaders
    for apply in reloaders:
        try:
            apply(result.settings)
        except Exception:
            log.exception(
                "applying the reloaded configuration failed in %s", getattr(apply, "__qualname__", apply)
            )
    log.info("configuration reloaded: %s", describe(result))
    return result


def _refusal(settings: Settings) -> str | None:
    """Why the daemon must not run with ``settings`` (as at start: a non-loopback address left with no key,
    an unreadable keys file), or None."""
    try:
        return exposure_problem(settings, accepted_keys(settings))
    except KeyFileError as exc:
        return str(exc)


def describe(result: Reconciled) -> str:
    """One line: what changed now, and what changed but waits for a restart."""
    parts = []
    if result.applied:
        parts.append(f"{', '.join(result.applied)} in effect now")
    if result.need_restart:
        parts.append(f"{', '.join(result.need_restart)} changed; takes effect after a restart")
    return "; ".join(parts) or "no setting changed"


@router.post("/reload")
async def reload(request: Request) -> dict[str, Any]:
    """Reload the configuration, as SIGHUP does; says what changed. 400 `invalid_configuration` (and
    nothing changed) when the configuration is invalid."""
    result = reload_configuration(request.app)
    return {"reloaded": True, "applied": result.applied, "need_restart": result.need_restart}
