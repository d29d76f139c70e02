"""The appliance's own API for the TUI and scripts: status, installed models, load and unload."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request

from appliance import __version__
from appliance.errors import InvalidRequest
from appliance.loaded import gpu_memory
from appliance.manager import ModelManager
from appliance.remotes.pool import RemotePool
from appliance.units import parse_duration
from server.compat_schemas import LoadRequest
from server.openapi import MODEL, PROTECTED, doc
from server.response_schemas import InstalledModels, Loaded, RequestLog, Status, Unloaded
from server.schemas import read_body

router = APIRouter(prefix="/appliance/v1")
_FOREVER_S = 100 * 365 * 86400.0


def _manager(request: Request) -> ModelManager:
    manager: ModelManager = request.app.state.manager
    return manager


@router.get("/models", **doc("openai", ok=InstalledModels))
async def models(request: Request) -> dict[str, Any]:
    """Every installed model, loaded or not, with the plan it is (or would be) loaded with."""
    return {"models": await asyncio.to_thread(_manager(request).describe_installed)}


@router.post(
    "/models/{name:path}/load",
    **doc("openai", body=LoadRequest, body_required=False, ok=Loaded, errors=MODEL),
)
async def load(name: str, request: Request) -> dict[str, Any]:
    """Load a model (if it is not loaded) and answer once it is ready. Optional JSON body:
    ``{"keep_alive": "10m"}`` (-1: until its memory is needed)."""
    body = await read_body(request, LoadRequest)
    given = "keep_alive" in body.model_fields_set
    try:
        keep_alive = None if body.keep_alive is None else parse_duration(body.keep_alive)
    except (ValueError, OverflowError) as exc:
        raise InvalidRequest(f"keep_alive: {exc}", param="keep_alive") from None
    if keep_alive is not None and keep_alive > _FOREVER_S:
        keep_alive = None  # past any machine's uptime: until its memory is needed, as -1 says
    started = time.monotonic()
    entry = await _manager(request).load(name, keep_alive_s=keep_alive, set_keep_alive=given)
    return {
        "model": entry.describe(time.monotonic()),
        "waited_s": round(time.monotonic() - started, 2),
    }


@router.post("/models/{name:path}/unload", **doc("openai", ok=Unloaded, errors=(*PROTECTED, 404)))
async def unload(name: str, request: Request) -> dict[str, Any]:
    """Unload a model once its running requests are done."""
    manager = _manager(request)
    model_id = manager.resolve(name).id
    return {"model": model_id, "unloaded": await manager.unload(name)}


@router.get("/status", **doc("openai", ok=Status))
async def status(request: Request) -> dict[str, Any]:
    """What the daemon is doing: hardware, loaded models with their plans, slots, queue, memory,
    request totals."""
    manager = _manager(request)
    hardware = request.app.state.hardware
    loaded = manager.describe_loaded()
    totals: dict[str, float] = {}
    by_backend: dict[str, dict[str, int]] = {}
    for family in request.app.state.metrics.requests.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                key = sample.labels["status"]
                totals[key] = totals.get(key, 0) + sample.value
                counts = by_backend.setdefault(sample.labels["backend"], {})
                counts[key] = counts.get(key, 0) + int(sample.value)
    budget = manager.plan_for(manager.resolve(None)).budget
    return {
        "version": __version__,
        "uptime_s": round(time.time() - request.app.state.started_at, 1),
        "hardware": hardware.to_json() if hardware is not None else None,
        "default_model": manager.default_id,
        "models": loaded,
        "queue": sum(m["queue_depth"] for m in loaded),
        "slots": {
            "busy": sum(m["slots_busy"] for m in loaded),
            "total": sum(m["slots_total"] for m in loaded),
        },
        "memory": {
            "budget_ram_bytes": budget.ram_bytes,
            "budget_vram_bytes": budget.vram_bytes,
            "models_ram_bytes": sum(m["plan"]["ram_bytes"] for m in loaded),
            "models_vram_bytes": sum(m["plan"]["vram_bytes"] for m in loaded),
            "gpus": gpu_memory(budget, manager.loaded()),
        },
        "requests": {status: int(count) for status, count in sorted(totals.items())},
        "requests_by_backend": {b: dict(sorted(c.items())) for b, c in sorted(by_backend.items())},
    }


@router.get("/remotes", **doc("openai"))
async def remotes(request: Request) -> dict[str, Any]:
    """Each remote: address and how it was found, health, breaker, load, models, latency; and the
    tailnet's peers when Tailscale targets are configured."""
    pool: RemotePool = request.app.state.remotes
    return pool.describe()


@router.get("/logs", **doc("openai", ok=RequestLog, errors=(*PROTECTED, 400)))
async def logs(request: Request, limit: int = 100) -> dict[str, Any]:
    """The most recent request log lines (newest last): what `appliance.requests` logs, as JSON."""
    recent = list(request.app.state.metrics.recent)
    return {"requests": recent[-max(1, min(limit, len(recent) or 1)) :] if recent else []}
