"""The one road of a generation or an embedding, whatever the dialect: to a remote when the router says
so (server.escalation), else to the local model through the manager; either way a Backend's events,
observed once for the metrics and the request's log line. The dialect modules only translate."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from fastapi import Request

from appliance import model_defaults
from appliance.backend import Backend, ChatParams, CompletionParams, Embeddings, Event
from appliance.manager import ModelManager
from server.escalation import escalate_embedding, escalate_generation
from server.metrics import Metrics
from server.record import record_of


@contextlib.asynccontextmanager
async def _local(
    request: Request,
    name: str | None,
    wait: bool,
    check_local: Callable[[], object] | None,
    keep_alive_s: float | None = None,
) -> AsyncIterator[Backend]:
    """The local model's backend, held (not unloaded) while the block queues the request; the time its
    model took to be ready (a load, or the wait for one) goes in the request's record."""
    if check_local is not None:
        check_local()
    manager: ModelManager = request.app.state.manager
    record = record_of(request.scope)
    started = time.monotonic()
    async with manager.use(name, wait=wait, keep_alive_s=keep_alive_s) as backend:
        record.load_s += time.monotonic() - started
        record.model = backend.model_id
        yield backend


@dataclass
class Generation:
    """A started generation: its events (observed), ``cancel()`` to stop it, and who serves it."""

    events: AsyncIterator[Event]
    cancel: Callable[[], None]
    model_id: str
    backend: str = "local"
    prompt_tokens: int | None = None  # as EventStream.prompt_tokens


async def generate(
    request: Request,
    endpoint: str,
    name: str | None,
    params: ChatParams | CompletionParams,
    *,
    wait: bool = True,
    escalate: bool = True,
    check_local: Callable[[], object] | None = None,
    keep_alive_s: float | None = None,
) -> Generation:
    """Start ``params`` on the backend the router picks for model ``name``. ``escalate=False``: here
    (the OpenAI routes asked the router already, for their byte proxy). ``check_local`` runs before the
    local model is used (a dialect's own not-found error); ``wait=False``: 503 while the model loads;
    ``keep_alive_s``: the local model's keep-alive from now on (ModelManager.use)."""
    metrics: Metrics = request.app.state.metrics
    record = record_of(request.scope)
    manager: ModelManager = request.app.state.manager
    params = model_defaults.applied(params, manager.settings_for(name))
    escalated = await escalate_generation(request, name, params) if escalate else None
    if escalated is not None:
        stream, where = escalated
        record.serve(endpoint, where.model, where.backend, where.reason)
        observed = metrics.observe(aiter(stream), record)
        return Generation(observed, stream.cancel, where.model, where.backend, stream.prompt_tokens)
    if check_local is not None:
        check_local()
    started = time.monotonic()
    await manager.ensure_context(name, params.context_tokens)  # a larger num_ctx: reloaded, if it fits
    record.load_s += time.monotonic() - started
    backend: Backend
    async with _local(request, name, wait, None, keep_alive_s) as backend:
        local = await (backend.chat(params) if isinstance(params, ChatParams) else backend.complete(params))
    record.serve(endpoint, backend.model_id)
    observed = metrics.observe(aiter(local), record)
    return Generation(observed, local.cancel, backend.model_id, prompt_tokens=local.prompt_tokens)


async def embed(
    request: Request,
    endpoint: str,
    name: str | None,
    inputs: list[str] | list[list[int]],
    *,
    wait: bool = True,
    check_local: Callable[[], object] | None = None,
    keep_alive_s: float | None = None,
) -> tuple[Embeddings, str]:
    """``inputs`` embedded by the backend the router picks (a remote only if it can embed them: token ids
    go as they are, to a remote that takes them), counted in the metrics; with the model id that served
    them."""
    metrics: Metrics = request.app.state.metrics
    record = record_of(request.scope)
    escalated = await escalate_embedding(request, name, inputs)
    if escalated is not None:
        result, where = escalated
        record.serve(endpoint, where.model, where.backend, where.reason)
        metrics.count_embeddings(record, result.prompt_tokens)
        return result, where.model
    backend: Backend
    async with _local(request, name, wait, check_local, keep_alive_s) as backend:
        result = await backend.embed(inputs)
    record.serve(endpoint, backend.model_id)
    metrics.count_embeddings(record, result.prompt_tokens)
    return result, backend.model_id


async def count_chat_tokens(request: Request, endpoint: str, name: str | None, params: ChatParams) -> int:
    """The prompt tokens ``params`` would count in a generation on the model here named ``name`` (the
    same per-model defaults, chat template and tokenizer), without generating. A model named through a
    remote (``REMOTE/NAME``) is counted by the model named NAME here: the remotes are not asked."""
    remote, _, rest = (name or "").partition("/")
    if rest and request.app.state.remotes.get(remote) is not None:
        name = rest
    manager: ModelManager = request.app.state.manager
    applied = model_defaults.applied(params, manager.settings_for(name))
    assert isinstance(applied, ChatParams)
    async with manager.use(name) as backend:
        record_of(request.scope).serve(endpoint, backend.model_id)
        return await backend.count_chat_tokens(applied)
