"""System memory, and the limit of the container (cgroup) the process runs in.

In a container the host's figures overstate what the process may use: the kernel kills it when its
cgroup's charge reaches the limit, whatever the host has left. The charge includes page cache, of which
the inactive file pages are reclaimed before the limit bites, so they count as available (as the host's
MemAvailable counts them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import psutil

# cgroup v1 reports "no limit" as a huge page-aligned number (PAGE_COUNTER_MAX * page size).
_NO_LIMIT = 1 << 60


@dataclass(frozen=True)
class MemoryInfo:
    total_bytes: int
    available_bytes: int
    limit_bytes: int | None


@dataclass(frozen=True)
class CgroupMemory:
    """The tightest memory limit among this process's cgroup and its ancestors, and the room left under it."""

    limit_bytes: int
    headroom_bytes: int  # limit minus the charge that cannot be reclaimed (usage minus inactive file pages)


# (file with the limit, file with the usage, key in memory.stat of the reclaimable file cache)
_V2 = ("memory.max", "memory.current", "inactive_file")
_V1 = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")


def _own_paths(self_cgroup: str) -> tuple[str, str]:
    """This process's cgroup v2 path and v1 memory-controller path, from the text of /proc/self/cgroup."""
    v2, v1 = "/", "/"
    for line in self_cgroup.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if not path.startswith("/"):
            continue
        if hierarchy == "0" and controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    return v2, v1


def _chain(base: Path, path: str) -> list[Path]:
    """``base`` joined with ``path`` and each of its ancestors, innermost first, down to ``base`` itself."""
    relative = PurePosixPath(path.strip()).relative_to("/") if path.strip().startswith("/") else None
    if relative is None or ".." in relative.parts:
        return [base]
    dirs = [base.joinpath(*relative.parts[:n]) for n in range(len(relative.parts), 0, -1)]
    return [*dirs, base]


def _read_int(path: Path) -> int | None:
    """An integer file; None where it is missing or unreadable. "max" reads as no limit (-1)."""
    try:
        raw = path.read_text().strip()
    except OSError:
        return None
    if raw == "max":
        return -1
    try:
        return int(raw)
    except ValueError:
        return None


def _stat_value(path: Path, key: str) -> int:
    try:
        text = path.read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def _limits(dirs: list[Path], files: tuple[str, str, str]) -> list[tuple[int, int]] | None:
    """(limit, headroom) for each dir that has a limit; None where no dir has the limit file at all."""
    limit_file, usage_file, inactive_key = files
    seen_any = False
    found = []
    for directory in dirs:
        limit = _read_int(directory / limit_file)
        if limit is None:
            continue
        seen_any = True
        if limit < 0 or limit >= _NO_LIMIT:
            continue
        usage = _read_int(directory / usage_file)
        if usage is None or usage < 0:
            headroom = limit  # unknown usage: the limit alone (the host's figure still caps it)
        else:
            reclaimable = _stat_value(directory / "memory.stat", inactive_key)
            headroom = limit - max(usage - reclaimable, 0)
        found.append((limit, max(headroom, 0)))
    return found if seen_any else None


def cgroup_memory(
    root: Path = Path("/sys/fs/cgroup"), proc_self_cgroup: Path = Path("/proc/self/cgroup")
) -> CgroupMemory | None:
    """The memory limit this process lives under and the room left, or None where there is no limit.

    cgroup v2 (``memory.max``, ``memory.current``, ``inactive_file``) wins over v1
    (``memory/memory.limit_in_bytes``, ``memory.usage_in_bytes``, ``total_inactive_file``) where both
    exist. The process's own cgroup (from ``/proc/self/cgroup``) and all its ancestors are read: a limit
    set on a parent (a systemd slice, a pod) binds as much as one on the process's own group.
    """
    try:
        self_cgroup = proc_self_cgroup.read_text()
    except OSError:
        self_cgroup = ""
    v2_path, v1_path = _own_paths(self_cgroup)
    found = _limits(_chain(root, v2_path), _V2)
    if found is None:
        found = _limits(_chain(root / "memory", v1_path), _V1)
    if not found:
        return None
    return CgroupMemory(min(f[0] for f in found), min(f[1] for f in found))


def cgroup_limit(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The memory limit of this cgroup (v2 ``memory.max`` or v1 ``memory.limit_in_bytes``), if any."""
    found = cgroup_memory(root)
    return found.limit_bytes if found else None


def memory_info(total_bytes: int, available_bytes: int, cgroup: CgroupMemory | None) -> MemoryInfo:
    """The host's figures, with what is available capped by the room left under a cgroup limit."""
    if cgroup is None:
        return MemoryInfo(total_bytes, available_bytes, None)
    return MemoryInfo(total_bytes, min(available_bytes, cgroup.headroom_bytes), cgroup.limit_bytes)


def detect_memory(
    cgroup_root: Path = Path("/sys/fs/cgroup"), proc_self_cgroup: Path = Path("/proc/self/cgroup")
) -> MemoryInfo:
    """This machine's memory as psutil reports it, capped by the container's limit where there is one."""
    vm = psutil.virtual_memory()
    return memory_info(int(vm.total), int(vm.available), cgroup_memory(cgroup_root, proc_self_cgroup))
