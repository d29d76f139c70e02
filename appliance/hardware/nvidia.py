"""NVIDIA GPUs through NVML (the ``nvidia-ml-py`` package, imported as ``pynvml``).

NVML is what nvidia-smi reads: it sees the GPUs whatever the llama.cpp build can use, so ``appliance hw``
can say "an RTX 4090, but this build runs on the CPU". No driver, no package: no GPUs, never an error.
"""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any

from appliance.hardware.profile import GpuInfo

log = logging.getLogger(__name__)


def _text(value: str | bytes) -> str:
    # pynvml returned bytes before nvidia-ml-py 11.515; str since.
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _device(nvml: Any, index: int, driver: str) -> GpuInfo:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    try:
        major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
        capability: str | None = f"{major}.{minor}"
    except nvml.NVMLError:
        capability = None
    return GpuInfo(
        index=index,
        backend="cuda",
        name=_text(nvml.nvmlDeviceGetName(handle)),
        total_bytes=int(memory.total),
        free_bytes=int(memory.free),
        compute_capability=capability,
        driver=driver,
    )


def detect_nvidia(nvml: ModuleType | Any | None = None) -> tuple[GpuInfo, ...]:
    """The NVIDIA GPUs NVML reports, in NVML's order; () without pynvml, a driver or a GPU.

    ``nvml`` stands in for the ``pynvml`` module (tests pass a fake built from recorded values).
    A GPU that fails to answer (fallen off the bus, say) is left out; the others are still listed.
    """
    if nvml is None:
        try:
            import pynvml
        except ImportError:
            return ()
        nvml = pynvml
    try:
        nvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ...: no usable driver
        log.debug("NVML unavailable: %s", exc, extra={"source": "nvml"})
        return ()
    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        gpus = []
        for index in range(int(nvml.nvmlDeviceGetCount())):
            try:
                gpus.append(_device(nvml, index, driver))
            except nvml.NVMLError as exc:
                log.warning("NVIDIA GPU %d does not answer: %s", index, exc, extra={"gpu_index": index})
        return tuple(gpus)
    except Exception as exc:  # a driver that initialises but then fails: report no GPUs, not a crash
        log.warning("NVML failed: %s", exc, extra={"source": "nvml"})
        return ()
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception as exc:
            log.debug("nvmlShutdown failed: %s", exc, extra={"source": "nvml"})
