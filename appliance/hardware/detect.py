"""The whole machine: every source's plain data assembled into one ``HardwareProfile``."""

from __future__ import annotations

import dataclasses
import platform
from collections.abc import Sequence

from appliance.hardware.board import detect_board
from appliance.hardware.cpu import CpuInfo, detect_cpu
from appliance.hardware.memory import MemoryInfo, detect_memory
from appliance.hardware.metal import detect_metal
from appliance.hardware.nvidia import detect_nvidia
from appliance.hardware.offload import (
    BackendDevice,
    detect_backend_devices,
    detect_offload,
    offload_gpus,
    offload_info,
)
from appliance.hardware.profile import GpuInfo, HardwareProfile, OffloadInfo


def merge_gpus(system_gpus: Sequence[GpuInfo], llama_gpus: Sequence[GpuInfo]) -> tuple[GpuInfo, ...]:
    """One record per physical GPU from what the system (NVML, Metal) and llama.cpp each report.

    A GPU both report is paired by name (then, for one backend with as many GPUs on each side, by order)
    and keeps the system's richer record (driver, compute capability), with the backend llama.cpp uses
    for it (an NVIDIA GPU driven through Vulkan is a "vulkan" GPU to the planner). Apple's unified
    memory takes llama.cpp's figures: they are Metal's exact working-set budget, where ours is an estimate.
    GPUs only llama.cpp sees (Vulkan, ROCm, ...) come after those the system sees, which stay listed even
    when the build cannot use them (``HardwareProfile.usable_gpus`` leaves those out).
    """
    pairs: dict[int, GpuInfo] = {}  # index into system_gpus -> the llama.cpp record paired with it
    unpaired: list[GpuInfo] = []
    for llama_gpu in llama_gpus:
        same_name = [i for i, g in enumerate(system_gpus) if i not in pairs and g.name == llama_gpu.name]
        same_name.sort(key=lambda i: system_gpus[i].backend != llama_gpu.backend)
        if same_name:
            pairs[same_name[0]] = llama_gpu
        else:
            unpaired.append(llama_gpu)
    for backend in dict.fromkeys(g.backend for g in unpaired):
        left_llama = [g for g in unpaired if g.backend == backend]
        left_system = [i for i, g in enumerate(system_gpus) if i not in pairs and g.backend == backend]
        if left_llama and len(left_llama) == len(left_system):
            for i, llama_gpu in zip(left_system, left_llama, strict=True):
                pairs[i] = llama_gpu
                unpaired.remove(llama_gpu)
    merged = []
    for i, system_gpu in enumerate(system_gpus):
        paired = pairs.get(i)
        if paired is None:
            merged.append(system_gpu)
        elif system_gpu.unified_memory:
            merged.append(
                dataclasses.replace(
                    system_gpu,
                    backend=paired.backend,
                    total_bytes=paired.total_bytes,
                    free_bytes=paired.free_bytes,
                    device=paired.device,
                )
            )
        else:
            merged.append(dataclasses.replace(system_gpu, backend=paired.backend, device=paired.device))
    return (*merged, *unpaired)


def assemble(
    cpu: CpuInfo,
    memory: MemoryInfo,
    *,
    nvidia: Sequence[GpuInfo] = (),
    metal: GpuInfo | None = None,
    devices: Sequence[BackendDevice] = (),
    offload: OffloadInfo | None = None,
    board: str | None = None,
    os: str = "",
) -> HardwareProfile:
    """A profile from each source's findings. ``devices`` are llama.cpp's; ``offload`` defaults to
    what they show (pass it where the registry was unreadable and a fallback answered instead)."""
    system_gpus = (*nvidia, *([metal] if metal is not None else []))
    gpus = merge_gpus(system_gpus, offload_gpus(devices))
    offload = offload if offload is not None else offload_info(devices)
    return HardwareProfile(cpu, memory, gpus, offload, board, os)


def detect_hardware() -> HardwareProfile:
    """This machine, from every source there is; a missing source is simply absent."""
    devices = detect_backend_devices()
    return assemble(
        detect_cpu(),
        detect_memory(),
        nvidia=detect_nvidia(),
        metal=detect_metal(),
        devices=devices or (),
        offload=detect_offload(devices),
        board=detect_board(),
        os=f"{platform.system()} {platform.release()}".strip(),
    )
