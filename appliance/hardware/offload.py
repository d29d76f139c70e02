"""What the installed llama.cpp build can offload to: its own answer, never a guess from the OS.

A PC with an RTX 4090 still runs on the CPU when llama-cpp-python was built without CUDA; only ggml's
backend registry knows which backends the build has and which devices they found.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass

from appliance.hardware.profile import GpuInfo, OffloadInfo

log = logging.getLogger(__name__)

# ggml device names are the backend's name and an index ("CUDA0", "Vulkan1", "MTL0"); where that name is
# not what users call the backend, this maps it.
_BACKEND_ALIASES = {"mtl": "metal", "gpuopencl": "opencl", "hip": "rocm"}
# Device types that hold offloaded layers (accel devices, BLAS or AMX, only speed up the CPU's work).
_OFFLOAD_TYPES = ("gpu", "igpu")


@dataclass(frozen=True)
class BackendDevice:
    """One device of ggml's backend registry, as ``appliance.engine.runtime.backend_devices`` reports it."""

    name: str  # "CUDA0", "MTL0", "Vulkan0", "CPU", "BLAS"
    description: str  # "NVIDIA GeForce RTX 4090", "Apple M2"
    type: str  # cpu | gpu | igpu | accel
    free_bytes: int
    total_bytes: int

    @property
    def backend(self) -> str:
        """The lowercase backend name users know: cuda, metal, vulkan, rocm, sycl, cpu, blas, rpc, ..."""
        match = re.match(r"[A-Za-z_]+", self.name)
        word = match.group(0).rstrip("_").lower() if match else self.name.lower()
        return _BACKEND_ALIASES.get(word, word)

    @property
    def index(self) -> int:
        """The device's index within its backend ("CUDA1" is 1); 0 where the name has none."""
        match = re.search(r"(\d+)$", self.name)
        return int(match.group(1)) if match else 0

    @property
    def is_offload_target(self) -> bool:
        return self.type in _OFFLOAD_TYPES


def offload_info(devices: Iterable[BackendDevice]) -> OffloadInfo:
    """Whether layers can go anywhere but the CPU, and through which backends (in registry order)."""
    backends = tuple(dict.fromkeys(d.backend for d in devices if d.is_offload_target))
    return OffloadInfo(bool(backends), backends)


def offload_gpus(devices: Iterable[BackendDevice]) -> tuple[GpuInfo, ...]:
    """The GPUs ggml found, as plain GPU records (with ggml's free memory and nothing more)."""
    return tuple(
        GpuInfo(
            index=d.index,
            backend=d.backend,
            name=d.description or d.name,
            total_bytes=d.total_bytes,
            free_bytes=d.free_bytes,
            unified_memory=d.type == "igpu" or d.backend == "metal",
            device=d.name,
        )
        for d in devices
        if d.is_offload_target
    )


def detect_backend_devices() -> tuple[BackendDevice, ...] | None:
    """The devices of the installed llama.cpp build, or None where its registry cannot be read."""
    try:
        from appliance.engine.runtime import backend_devices

        return tuple(BackendDevice(*device) for device in backend_devices())
    except (ImportError, OSError, AttributeError, RuntimeError) as exc:
        log.warning("cannot read llama.cpp's backend registry: %s", exc, extra={"source": "ggml"})
        return None


def detect_offload(devices: tuple[BackendDevice, ...] | None) -> OffloadInfo:
    """What the build can offload to: from its devices, else from ``llama_supports_gpu_offload()``.

    The fallback knows only yes or no, not which backend: its ``backends`` stay empty.
    """
    if devices is not None:
        return offload_info(devices)
    try:
        from appliance.engine.runtime import supports_gpu_offload

        return OffloadInfo(supports_gpu_offload())
    except (ImportError, OSError, AttributeError, RuntimeError) as exc:
        log.warning("cannot load llama.cpp: %s", exc, extra={"source": "llama_cpp"})
        return OffloadInfo(False)
