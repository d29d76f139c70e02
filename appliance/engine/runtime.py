"""The llama.cpp library itself: loading it once, routing its log into Python logging, and what the
installed build can do (system info, GPU offload, ggml's backend devices)."""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import llama_cpp

log = logging.getLogger(__name__)


class _LogBridge:
    """Routes llama.cpp's log lines into Python logging, keeping recent errors for messages."""

    def __init__(self) -> None:
        self.recent_errors: deque[str] = deque(maxlen=8)
        self.captured: list[str] | None = None  # every line, while a dry run listens
        self._partial = ""
        self._level = 2
        self._lock = threading.Lock()
        self.callback = llama_cpp.llama_log_callback(self._on_log)

    def _on_log(self, level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
        # ggml_log_level: 1 debug, 2 info, 3 warn, 4 error, 5 continues the previous line.
        message = text.decode("utf-8", errors="replace")
        with self._lock:
            if level != 5:
                self._level = level
            self._partial += message
            if not self._partial.endswith("\n"):
                return
            line, self._partial = self._partial.rstrip("\n"), ""
            level = self._level
            if self.captured is not None:
                self.captured.append(line)
        if level >= 4:
            self.recent_errors.append(line)
            log.warning("llama.cpp: %s", line)
        else:
            log.debug("llama.cpp: %s", line)


_BRIDGE: _LogBridge | None = None
_INIT_LOCK = threading.Lock()


def init_backend() -> _LogBridge:
    """Load llama.cpp's backends once, with its log routed through the bridge; the bridge."""
    global _BRIDGE
    with _INIT_LOCK:
        if _BRIDGE is None:
            _BRIDGE = _LogBridge()
            llama_cpp.llama_log_set(_BRIDGE.callback, ctypes.c_void_p(0))
            llama_cpp.llama_backend_init()
        return _BRIDGE


@contextmanager
def captured_log() -> Iterator[list[str]]:
    """Every line llama.cpp logs while the block runs. One block at a time, and no load starts meanwhile,
    so the lines are the block's own (a dry run reads its buffer sizes from them)."""
    bridge = init_backend()
    with _INIT_LOCK:
        lines: list[str] = []
        bridge.captured = lines
        try:
            yield lines
        finally:
            bridge.captured = None


def supports_gpu_offload() -> bool:
    """Whether the installed llama.cpp build can offload layers to a GPU."""
    init_backend()
    return bool(llama_cpp.llama_supports_gpu_offload())


def system_info() -> str:
    """llama.cpp's one-line summary of the CPU features it was built to use."""
    init_backend()
    return llama_cpp.llama_print_system_info().decode("utf-8", errors="replace").strip()


@functools.cache
def repacks_by_default() -> bool:
    """Whether weights on the CPU are repacked into llama.cpp's extra buffer types (interleaved layouts,
    AMX tiles) unless the settings say: yes, except where the build runs AMX kernels. Those crash in
    ggml_backend_amx_mul_mat at the first batch of several tokens on Sapphire Rapids class machines (seen
    here: every prompt of the default model; llama.cpp issue 20824, closed unfixed), where llama-server
    needs --no-repack."""
    if "AMX_INT8 = 1" not in system_info():
        return True
    log.warning(
        "weights are not repacked for the CPU: this llama.cpp build's AMX kernels crash on this CPU "
        "(llama.cpp issue 20824); set model.cpu_repack to true to use them anyway"
    )
    return False


# enum ggml_backend_dev_type, in ggml-backend.h's order
_DEVICE_TYPES = ("cpu", "gpu", "igpu", "accel")


@functools.cache
def _ggml_library(name: str) -> Any:
    """libggml (or libggml-base), loaded once from beside the libllama that llama_cpp loaded. llama_cpp
    honours LLAMA_CPP_LIB_PATH (a llama.cpp built apart, docs/INSTALL.md) but its _ggml module looks only
    in the package's lib/, which then holds no libggml (seen on the H200 build: `hw` saw no GPU)."""
    from llama_cpp import _ctypes_extensions

    override = os.environ.get("LLAMA_CPP_LIB_PATH")
    directory = Path(override) if override else Path(llama_cpp.__file__).parent / "lib"
    return _ctypes_extensions.load_shared_library(name, directory)


def _ggml_function(name: str, restype: Any, *argtypes: Any) -> Any:
    """A private ctypes binding of a ggml function (argtypes set on it bind nothing of llama_cpp's).

    libggml holds the backend registry; the device calls live in libggml-base, which libggml links, so
    the dynamic linker finds them through it; where it does not (Windows), load it.
    """
    prototype = ctypes.CFUNCTYPE(restype, *argtypes)
    try:
        return prototype((name, _ggml_library("ggml")))
    except AttributeError:
        return prototype((name, _ggml_library("ggml-base")))


def device_handles(names: tuple[str, ...]) -> Any:
    """A NULL-terminated array of ggml's devices named ``names`` (llama_model_params.devices). Raises
    LookupError naming a device this build does not have."""
    init_backend()
    by_name = _ggml_function("ggml_backend_dev_by_name", ctypes.c_void_p, ctypes.c_char_p)
    handles = (ctypes.c_void_p * (len(names) + 1))()
    for i, name in enumerate(names):
        handle = by_name(name.encode("utf-8"))
        if not handle:
            raise LookupError(f"this llama.cpp build has no device {name}")
        handles[i] = handle
    return handles


def backend_devices() -> list[tuple[str, str, str, int, int]]:
    """The devices llama.cpp's build can run on, as ggml's backend registry reports them.

    Each is (name, description, type, free_bytes, total_bytes), e.g. ("CUDA0", "NVIDIA GeForce RTX 4090",
    "gpu", ...) or ("CPU", "AMD Ryzen 9 7950X 16-Core Processor", "cpu", ...); type is cpu, gpu, igpu
    (integrated, sharing host memory) or accel (BLAS, AMX: they help the CPU, they hold no layers).
    Raises OSError or AttributeError where the library lacks the registry (not this pinned release).
    """
    init_backend()  # llama_backend_init loads the backends of a build with dynamic backends
    size_t, device = ctypes.c_size_t, ctypes.c_void_p
    if _ggml_function("ggml_backend_reg_count", size_t)() == 0:
        _ggml_function("ggml_backend_load_all", None)()
    count = _ggml_function("ggml_backend_dev_count", size_t)
    get = _ggml_function("ggml_backend_dev_get", device, size_t)
    name = _ggml_function("ggml_backend_dev_name", ctypes.c_char_p, device)
    description = _ggml_function("ggml_backend_dev_description", ctypes.c_char_p, device)
    dev_type = _ggml_function("ggml_backend_dev_type", ctypes.c_int, device)
    memory = _ggml_function(
        "ggml_backend_dev_memory", None, device, ctypes.POINTER(size_t), ctypes.POINTER(size_t)
    )
    devices = []
    for i in range(count()):
        dev = get(i)
        if not dev:
            continue
        free, total = size_t(0), size_t(0)
        memory(dev, ctypes.byref(free), ctypes.byref(total))
        kind = dev_type(dev)
        devices.append(
            (
                (name(dev) or b"").decode("utf-8", errors="replace"),
                (description(dev) or b"").decode("utf-8", errors="replace"),
                _DEVICE_TYPES[kind] if 0 <= kind < len(_DEVICE_TYPES) else "unknown",
                int(free.value),
                int(total.value),
            )
        )
    return devices
