"""The CPU: model name, core counts and the SIMD features llama.cpp can use."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

import psutil

_X86_FEATURES = ("avx", "avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "f16c", "fma", "amx_int8")
_ARM_FEATURES = {"asimd": "neon", "asimddp": "dotprod", "sve": "sve", "i8mm": "i8mm"}


@dataclass(frozen=True)
class CpuInfo:
    model: str
    arch: str
    cores_physical: int
    cores_logical: int
    features: tuple[str, ...]


def parse_cpuinfo(text: str, arch: str) -> tuple[str, tuple[str, ...]]:
    """The model name and SIMD features from the text of /proc/cpuinfo."""
    model, flags = "", set[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    if arch in ("x86_64", "amd64", "i686"):
        features = tuple(f for f in _X86_FEATURES if f in flags)
    else:
        features = tuple(name for flag, name in _ARM_FEATURES.items() if flag in flags)
    return model, features


def detect_cpu(cpuinfo_path: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    """This machine's CPU. Missing sources give empty fields, never an error."""
    arch = platform.machine().lower()
    try:
        model, features = parse_cpuinfo(cpuinfo_path.read_text(errors="replace"), arch)
    except OSError:
        model, features = "", ()
    logical = psutil.cpu_count(logical=True) or 1
    physical = psutil.cpu_count(logical=False) or logical
    return CpuInfo(model or platform.processor() or arch, arch, physical, logical, features)
