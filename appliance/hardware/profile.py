"""The whole machine as the planner sees it: plain frozen data, serialisable as INTERFACES.md's hw JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from appliance.hardware.cpu import CpuInfo
from appliance.hardware.memory import MemoryInfo


@dataclass(frozen=True)
class GpuInfo:
    """One GPU. ``unified_memory`` is true where it shares the host's RAM (Apple silicon)."""

    index: int
    backend: str  # "cuda" | "metal" | "vulkan" | ...
    name: str
    total_bytes: int
    free_bytes: int
    compute_capability: str | None = None
    driver: str | None = None
    unified_memory: bool = False
    # The llama.cpp build's name for it ("CUDA1"), where its backend registry lists it: how the engine
    # names the GPUs of a plan to llama.cpp (CUDA's device order need not be NVML's).
    device: str | None = None


@dataclass(frozen=True)
class OffloadInfo:
    """What the installed llama.cpp build can offload to, as its ggml backend registry reports."""

    supported: bool
    backends: tuple[str, ...] = ()


@dataclass(frozen=True)
class HardwareProfile:
    cpu: CpuInfo
    memory: MemoryInfo
    gpus: tuple[GpuInfo, ...] = ()
    offload: OffloadInfo = field(default_factory=lambda: OffloadInfo(False))
    board: str | None = None
    os: str = ""

    @property
    def usable_gpus(self) -> tuple[GpuInfo, ...]:
        """GPUs the llama.cpp build can actually use."""
        if not self.offload.supported:
            return ()
        return tuple(g for g in self.gpus if g.backend in self.offload.backends)

    def to_json(self) -> dict[str, Any]:
        return {
            "cpu": {
                "model": self.cpu.model,
                "arch": self.cpu.arch,
                "cores_physical": self.cpu.cores_physical,
                "cores_logical": self.cpu.cores_logical,
                "cores_performance": self.cpu.cores_performance,
                "features": list(self.cpu.features),
            },
            "memory": {
                "total_bytes": self.memory.total_bytes,
                "available_bytes": self.memory.available_bytes,
                "limit_bytes": self.memory.limit_bytes,
            },
            "gpus": [
                {
                    "index": g.index,
                    "backend": g.backend,
                    "name": g.name,
                    "total_bytes": g.total_bytes,
                    "free_bytes": g.free_bytes,
                    "compute_capability": g.compute_capability,
                    "driver": g.driver,
                    "unified_memory": g.unified_memory,
                    "device": g.device,
                }
                for g in self.gpus
            ],
            "offload": {"supported": self.offload.supported, "backends": list(self.offload.backends)},
            "board": self.board,
            "os": self.os,
        }
