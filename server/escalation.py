"""Deciding, per request, between this machine and the remotes, for every dialect (appliance.routing
decides; this module gathers what it needs and carries the decision out, failing over before the first
byte to the next remote or back here).

One loop (``_over_remotes``) tries the chosen remote and its fallbacks, whatever carries the request:
the OpenAI routes pass the remote's bytes through (server.proxy, for their fidelity); the other dialects
read the remote's answer as events through appliance.remotes.backend.RemoteBackend and write it in
their own shape. Either way the request's record (server.record) names the backend and the reason (the
X-Appliance-* headers and the request's metrics come from it)."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import Response

from appliance.backend import ChatParams, CompletionParams, Embeddings, EventStream, has_images
from appliance.errors import ApplianceError, ModelNotFound
from appliance.manager import ModelManager
from appliance.remotes.backend import RemoteBackend
from appliance.remotes.pool import Remote, RemotePool
from appliance.remotes.upstream import Failover
from appliance.routing import LOCAL, Decision, LocalOption, NoRoute, route
from server.proxy import Exchange, forward
from server.record import record_of

log = logging.getLogger(__name__)
_T = TypeVar("_T")


class RemoteUnavailable(ApplianceError):
    status = 503
    error_type = "server_error"
    code = "remote_unavailable"


@dataclass(frozen=True)
class Escalated:
    """Where a request went: the remote's label (``remote:NAME``), why, and the model as named here."""

    backend: str
    reason: str | None
    model: str


_ABILITIES = {"vision": "read images"}  # needs a local model may lack, as the router's reason says them


def _local_option(manager: ModelManager, name: str | None, need: str | None = None) -> LocalOption:
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
    if entry is not None and entry.state == "ready":
        wait = entry.backend.predicted_wait_s
    n_ctx = plan.settings.n_ctx // max(plan.settings.n_parallel, 1)
    able = need is None or bool(getattr(manager.capabilities(model.id), need))
    lacks = None if able else _ABILITIES.get(need or "", need)
    return LocalOption(installed=True, fits=plan.fits, n_ctx=n_ctx, predicted_wait_s=wait, lacks=lacks)


def _rough_tokens(content: Any, asked: Any) -> int:
    """A rough count of what a request will hold: about 4 characters a token, plus what it asks for."""
    return len(json.dumps(content or "")) // 4 + (asked if isinstance(asked, int) else 0)


def _needed_tokens(body: dict[str, Any]) -> int:
    content = body.get("messages") or body.get("prompt")
    return _rough_tokens(content, body.get("max_completion_tokens") or body.get("max_tokens") or 0)


def _params_tokens(params: ChatParams | CompletionParams | list[str] | list[list[int]]) -> int:
    if isinstance(params, list):
        token_ids = [ids for ids in params if isinstance(ids, list)]
        return sum(map(len, token_ids)) if token_ids else _rough_tokens(params, 0)
    content = params.messages if isinstance(params, ChatParams) else params.prompt
    return _rough_tokens(content, params.max_tokens or 0)


def _decide(
    request: Request, name: str | None, needed_tokens: int, need: str | None
) -> tuple[str, Decision] | None:
    """The model's name here and where the request goes; None when it stays here without asking the router
    (no remotes, or escalation off for it)."""
    pool: RemotePool = request.app.state.remotes
    if not pool.remotes:
        return None
    settings = request.app.state.settings
    manager: ModelManager = request.app.state.manager
    explicit, local_name = None, name
    if name and "/" in name and pool.get(name.split("/", 1)[0]) is not None:
        explicit, local_name = name.split("/", 1)
    header = request.headers.get("x-escalate", "").strip().lower() or None
    model = manager.model_id(local_name) if local_name else manager.default_id  # an alias: its model
    policy = settings.routing.models.get(model, settings.routing.escalation)
    if explicit is None and header != "always" and policy == "never":
        return None
    try:
        decision = route(
            local=_local_option(manager, local_name, need),
            remotes=pool.options(model, need),
            explicit=explicit,
            header=header if header in ("always", "never") else None,
            policy=policy,
            needed_tokens=needed_tokens,
            max_queue_wait_s=settings.routing.max_queue_wait_s,
        )
    except NoRoute as exc:
        raise RemoteUnavailable(str(exc)) from None
    return model, decision


async def _over_remotes(
    request: Request,
    model: str,
    decision: Decision,
    attempt: Callable[[Remote, str, Escalated], Awaitable[_T]],
) -> tuple[_T, Escalated] | None:
    """``attempt(remote, its model name, where)`` on the chosen remote, then on each fallback while they
    fail before the first byte (Failover); None when the request is to be served here after all."""
    if decision.target == LOCAL:
        return None
    pool: RemotePool = request.app.state.remotes
    record = record_of(request.scope)
    failures: list[str] = []
    for target in (decision.target, *decision.fallbacks):
        if target == LOCAL:
            record.serve(request.url.path, model)
            log.info("serving %s here after the remotes failed: %s", model, "; ".join(failures))
            return None
        remote = pool.get(target)
        remote_model = remote.remote_model(model) if remote is not None else None
        if remote is None or remote_model is None or not remote.usable:
            continue
        where = Escalated(f"remote:{remote.name}", decision.reason, model)
        record.serve(request.url.path, model, where.backend, where.reason)
        try:
            result = await attempt(remote, remote_model, where)
        except Failover as exc:
            failures.append(str(exc))
            log.warning("remote failed before answering: %s", exc)
            continue
        request.app.state.metrics.escalations.labels(decision.reason or "", remote.name).inc()
        log.info("escalated to %s (%s): %s", remote.name, decision.reason, decision.why)
        return result, where
    record.serve(request.url.path, model)  # refused here, as a local request
    raise RemoteUnavailable("no backend could take the request: " + "; ".join(failures or [decision.why]))


async def escalate(request: Request, path: str, name: str | None) -> Response | None:
    """The remote's answer, passed through as it is, when an OpenAI chat or completion goes to a remote;
    None to serve it here."""
    if not request.app.state.remotes.remotes:
        return None
    body: dict[str, Any] = json.loads(await request.body())
    messages = body.get("messages")
    need = "grammar" if body.get("grammar") else None
    if body.get("suffix"):
        need = "infill"  # served here only: no remote kind frames a model's FIM tokens for us
    if isinstance(messages, list) and has_images(messages):
        need = "vision"  # what the models here cannot do comes first
    decided = _decide(request, name, _needed_tokens(body), need)
    if decided is None:
        return None
    model, decision = decided
    pool: RemotePool = request.app.state.remotes
    metrics = request.app.state.metrics

    async def attempt(remote: Remote, remote_model: str, where: Escalated) -> Response:
        def first_byte(seconds: float) -> None:
            metrics.ttft.labels(model, where.backend).observe(seconds)
            remote.ttft_s.append(seconds)

        exchange = Exchange(record_of(request.scope), on_end=metrics.finish)
        body_there = {**body, "model": remote_model}
        return await forward(pool.client, remote, path, body_there, request, first_byte, exchange)

    escalated = await _over_remotes(request, model, decision, attempt)
    return escalated[0] if escalated is not None else None


async def escalate_generation(
    request: Request, name: str | None, params: ChatParams | CompletionParams
) -> tuple[EventStream, Escalated] | None:
    """A remote's stream of events for ``params`` (its first byte already here) when the request goes to
    a remote; None to serve it here."""
    need = "logprobs" if params.top_logprobs is not None else None
    if params.grammar is not None:
        need = "grammar"  # every remote gives log-probabilities; only some read a grammar
    if isinstance(params, CompletionParams) and params.infill is not None:
        need = "infill"
    if isinstance(params, ChatParams) and has_images(params.messages):
        need = "vision"  # what the models here cannot do comes first
    decided = _decide(request, name, _params_tokens(params), need)
    if decided is None:
        return None
    model, decision = decided
    pool: RemotePool = request.app.state.remotes

    async def attempt(remote: Remote, remote_model: str, where: Escalated) -> EventStream:
        backend = RemoteBackend(pool.client, remote, model, remote_model)
        if isinstance(params, ChatParams):
            return await backend.chat(params)
        return await backend.complete(params)

    return await _over_remotes(request, model, decision, attempt)


async def escalate_embedding(
    request: Request, name: str | None, inputs: list[str] | list[list[int]]
) -> tuple[Embeddings, Escalated] | None:
    """A remote's embeddings of ``inputs`` when the request goes to a remote able to embed them (token
    ids: one that takes them as they are); None to serve it here."""
    need = "embeddings" if all(isinstance(i, str) for i in inputs) else "embed_token_ids"
    decided = _decide(request, name, _params_tokens(inputs), need)
    if decided is None:
        return None
    model, decision = decided
    pool: RemotePool = request.app.state.remotes

    async def attempt(remote: Remote, remote_model: str, where: Escalated) -> Embeddings:
        return await RemoteBackend(pool.client, remote, model, remote_model).embed(inputs)

    return await _over_remotes(request, model, decision, attempt)
