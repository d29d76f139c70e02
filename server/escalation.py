"""Deciding, per request, between this machine and the remotes (appliance.routing decides; this module
gathers what it needs and carries the decision out, failing over before the first byte)."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from appliance.engine.local import ModelState
from appliance.errors import ApplianceError, ModelNotFound
from appliance.manager import ModelManager
from appliance.remotes.pool import RemotePool
from appliance.routing import LOCAL, LocalOption, NoRoute, route
from server.proxy import Exchange, Failover, forward

log = logging.getLogger(__name__)


class RemoteUnavailable(ApplianceError):
    status = 503
    error_type = "server_error"
    code = "remote_unavailable"


def _local_option(manager: ModelManager, name: str | None) -> LocalOption:
    try:
        model = manager.resolve(name)
    except ModelNotFound:
        return LocalOption(installed=False, fits=False, n_ctx=None, predicted_wait_s=0.0)
    try:
        plan = manager.plan_for(model)
    except (OSError, ValueError):
        return LocalOption(installed=True, fits=False, n_ctx=None, predicted_wait_s=0.0)
    entry = next((e for e in manager.loaded() if e.model.id == model.id), None)
    wait = 0.0
    if entry is not None and entry.backend.state is ModelState.READY:
        wait = entry.backend.predicted_wait_s
    n_ctx = plan.settings.n_ctx // max(plan.settings.n_parallel, 1)
    return LocalOption(installed=True, fits=plan.fits, n_ctx=n_ctx, predicted_wait_s=wait)


def _needed_tokens(body: dict[str, Any]) -> int:
    """A rough count of what the request will hold (about 4 characters a token, plus what it asks for)."""
    text = json.dumps(body.get("messages") or body.get("prompt") or body.get("input") or "")
    asked = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    return len(text) // 4 + (asked if isinstance(asked, int) else 0)


async def escalate(request: Request, path: str, name: str | None) -> Response | None:
    """The remote's answer when the request goes to a remote; None to serve it here."""
    pool: RemotePool = request.app.state.remotes
    if not pool.remotes:
        return None
    settings = request.app.state.settings
    manager: ModelManager = request.app.state.manager
    explicit, local_name = None, name
    if name and "/" in name and pool.get(name.split("/", 1)[0]) is not None:
        explicit, local_name = name.split("/", 1)
    header = request.headers.get("x-escalate", "").strip().lower() or None
    policy = settings.routing.models.get(local_name or manager.default_id, settings.routing.escalation)
    if explicit is None and header != "always" and policy == "never":
        return None
    body: dict[str, Any] = json.loads(await request.body())
    try:
        decision = route(
            local=_local_option(manager, local_name),
            remotes=pool.options(local_name or manager.default_id),
            explicit=explicit,
            header=header if header in ("always", "never") else None,
            policy=policy,
            needed_tokens=_needed_tokens(body),
            max_queue_wait_s=settings.routing.max_queue_wait_s,
        )
    except NoRoute as exc:
        raise RemoteUnavailable(str(exc)) from None
    if decision.target == LOCAL:
        return None
    metrics = request.app.state.metrics
    failures: list[str] = []
    for target in (decision.target, *decision.fallbacks):
        if target == LOCAL:
            log.info("serving %s here after the remotes failed: %s", local_name, "; ".join(failures))
            return None
        remote = pool.get(target)
        model = remote.remote_model(local_name or manager.default_id) if remote is not None else None
        if remote is None or model is None or not remote.usable:
            continue
        backend = f"remote:{remote.name}"

        def first_byte(seconds: float, remote_name: str = remote.name, label: str = backend) -> None:
            metrics.ttft.labels(local_name or manager.default_id, label).observe(seconds)
            pool_remote = pool.get(remote_name)
            if pool_remote is not None:
                pool_remote.ttft_s.append(seconds)

        def log_line(exchange: Exchange, label: str = backend, reason: str | None = decision.reason) -> None:
            metrics.record({"endpoint": path, "model": local_name or manager.default_id, "backend": label,
                            "reason": reason, **exchange.fields()})  # fmt: skip

        exchange = Exchange(on_end=log_line)
        try:
            response = await forward(
                pool.client, remote, path, {**body, "model": model}, request, first_byte, exchange
            )
        except Failover as exc:
            failures.append(str(exc))
            log.warning("remote failed before answering: %s", exc)
            continue
        request.state.backend = backend
        request.state.logged = True  # by the exchange, when the answer ends
        request.state.escalation_reason = decision.reason
        request.state.model = local_name or manager.default_id
        metrics.escalations.labels(decision.reason or "", remote.name).inc()
        log.info("escalated to %s (%s): %s", remote.name, decision.reason, decision.why)
        return response
    raise RemoteUnavailable("no backend could take the request: " + "; ".join(failures or [decision.why]))
