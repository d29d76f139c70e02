"""The appliance's own API for the TUI and scripts: status, installed models, load and unload."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from fastapi import APIRouter, Request

from appliance import __version__
from appliance.errors import InvalidRequest
from appliance.manager import ModelManager
from appliance.remotes.pool import RemotePool
from appliance.units import parse_duration

router = APIRouter(prefix="/appliance/v1")


def _manager(request: Request) -> ModelManager:
    manager: ModelManager = request.app.state.manager
    return manager


@router.get("/models")
async def models(request: Request) -> dict[str, Any]:
    """Every installed model, loaded or not, with the plan it is (or would be) loaded with."""
    return {"models": await asyncio.to_thread(_manager(request).describe_installed)}


@router.post("/models/{name:path}/load")
async def load(name: str, request: Request) -> dict[str, Any]:
    """Load a model (if it is not loaded) and answer once it is ready. Optional JSON body:
    ``{"keep_alive": "10m"}`` (-1: until its memory is needed)."""
    keep_alive: float | None = None
    raw = await request.body()
    given = False
    if raw.strip():
        try:
            body = json.loads(raw)
            if "keep_alive" in body:
                keep_alive, given = parse_duration(body["keep_alive"]), True
        except (ValueError, TypeError) as exc:
            message = f'bad body ({exc}); expected {{"keep_alive": "5m"}}'
            raise InvalidRequest(message, param="keep_alive") from None
    started = time.monotonic()
    entry = await _manager(request).load(name, keep_alive_s=keep_alive, set_keep_alive=given)
    return {
        "model": entry.describe(time.monotonic()),
        "waited_s": round(time.monotonic() - started, 2),
    }


@router.post("/models/{name:path}/unload")
async def unload(name: str, request: Request) -> dict[str, Any]:
    """Unload a model once its running requests are done."""
    manager = _manager(request)
    model_id = manager.resolve(name).id
    return {"model": model_id, "unloaded": await manager.unload(name)}


@router.get("/status")
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
        },
        "requests": {status: int(count) for status, count in sorted(totals.items())},
        "requests_by_backend": {b: dict(sorted(c.items())) for b, c in sorted(by_backend.items())},
    }


@router.get("/remotes")
async def remotes(request: Request) -> dict[str, Any]:
    """Each remote: address and how it was found, health, breaker, load, models, latency; and the
    tailnet's peers when Tailscale targets are configured."""
    pool: RemotePool = request.app.state.remotes
    return pool.describe()


@router.get("/logs")
async def logs(request: Request, limit: int = 100) -> dict[str, Any]:
    """The most recent request log lines (newest last): what `appliance.requests` logs, as JSON."""
    recent = list(request.app.state.metrics.recent)
    return {"requests": recent[-max(1, min(limit, len(recent) or 1)) :] if recent else []}
