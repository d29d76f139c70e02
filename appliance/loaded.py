"""A model the manager has given a backend (loading, ready, failed or being unloaded), and the limits
the server settings put on each model's requests."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from appliance.config import Settings
from appliance.engine.local import LocalLlamaBackend
from appliance.engine.params import RequestLimits
from appliance.planner.plan import Budget, Plan, remaining
from models.catalog import LocalModel


@dataclass(eq=False)
class Loaded:
    """A model with a backend: loading, ready, failed, or being unloaded."""

    model: LocalModel
    backend: LocalLlamaBackend
    plan: Plan
    keep_alive_s: float | None  # None: stays until its memory is needed
    settled: asyncio.Event  # set once the load succeeded or failed
    leases: int = 0  # requests between choosing this model and queueing on it
    last_used: float = field(default_factory=time.monotonic)
    unloading: bool = False
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def idle(self) -> bool:
        return self.leases == 0 and self.backend.idle

    def idle_seconds(self, now: float) -> float:
        return now - max(self.last_used, self.backend.idle_since)

    def describe(self, now: float) -> dict[str, Any]:
        memory, settings = self.plan.memory, self.plan.settings
        info = self.backend.describe()
        info.update(
            source=self.model.source,
            quant=self.plan.model.quant,
            plan={
                "n_ctx": settings.n_ctx,
                "n_parallel": settings.n_parallel,
                "n_gpu_layers": settings.n_gpu_layers,
                "kv_type": settings.kv_type,
                "ram_bytes": memory.ram_bytes,
                "vram_bytes": memory.vram_bytes,
                "devices": [
                    {"index": d.gpu, "layers": d.layers, "vram_bytes": d.vram_bytes} for d in memory.devices
                ],
            },
            keep_alive_s=self.keep_alive_s,
            idle_s=round(self.idle_seconds(now), 1) if self.idle else 0.0,
            state=self.state,
        )
        return info

    @property
    def state(self) -> str:
        return "unloading" if self.unloading else self.backend.state.value


def gpu_memory(budget: Budget, entries: list[Loaded]) -> list[dict[str, Any]]:
    """Each GPU the planner may use: its budget and what the loaded models' plans hold on it."""
    left = remaining(budget, [e.plan.memory for e in entries]).gpus
    return [
        {
            "index": g.index,
            "name": g.name,
            "budget_bytes": g.vram_bytes,
            "models_bytes": g.vram_bytes - r.vram_bytes,
        }
        for g, r in zip(budget.gpus, left, strict=True)
    ]


def request_limits(settings: Settings) -> RequestLimits:
    """The limits the server settings put on each model's requests."""
    server = settings.server
    return RequestLimits(
        max_queue=server.max_queue,
        request_deadline_s=server.request_deadline_s,
        max_messages=server.max_messages,
        max_tokens_cap=server.max_tokens_cap,
    )
