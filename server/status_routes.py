"""The appliance's own API for the TUI and scripts: `/appliance/v1/status` and `/appliance/v1/models`."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request

from appliance import __version__
from appliance.registry import ModelRegistry

router = APIRouter(prefix="/appliance/v1")


def _models(request: Request) -> list[dict[str, Any]]:
    registry: ModelRegistry = request.app.state.registry
    return [backend.describe() for backend in registry]


@router.get("/models")
async def models(request: Request) -> dict[str, Any]:
    return {"models": _models(request)}


@router.get("/status")
async def status(request: Request) -> dict[str, Any]:
    """What the daemon is doing: hardware, models with their slots and queues, request totals."""
    hardware = request.app.state.hardware
    served = _models(request)
    totals: dict[str, float] = {}
    for family in request.app.state.metrics.requests.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                key = sample.labels["status"]
                totals[key] = totals.get(key, 0) + sample.value
    return {
        "version": __version__,
        "uptime_s": round(time.time() - request.app.state.started_at, 1),
        "hardware": hardware.to_json() if hardware is not None else None,
        "models": served,
        "queue": sum(m["queue_depth"] for m in served),
        "slots": {
            "busy": sum(m["slots_busy"] for m in served),
            "total": sum(m["slots_total"] for m in served),
        },
        "requests": {status: int(count) for status, count in sorted(totals.items())},
    }
