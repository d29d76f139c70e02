"""System memory, and the limit of the container (cgroup) the process runs in."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True)
class MemoryInfo:
    total_bytes: int
    available_bytes: int
    limit_bytes: int | None


def cgroup_limit(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The memory limit of this cgroup (v2 ``memory.max`` or v1 ``memory.limit_in_bytes``), if any."""
    for name in ("memory.max", "memory/memory.limit_in_bytes"):
        try:
            raw = (root / name).read_text().strip()
        except OSError:
            continue
        if raw == "max":
            return None
        try:
            value = int(raw)
        except ValueError:
            continue
        # cgroup v1 reports "no limit" as a huge page-aligned number.
        return value if value < 1 << 60 else None
    return None


def detect_memory() -> MemoryInfo:
    vm = psutil.virtual_memory()
    return MemoryInfo(int(vm.total), int(vm.available), cgroup_limit())
