"""Apple silicon's GPU: unified memory, of which macOS lets the GPU wire only part.

The exact budget is Metal's ``MTLDevice.recommendedMaxWorkingSetSize``, which only Metal can tell (and
which llama.cpp's Metal backend reports as its device memory: ``detect.py`` prefers that figure when the
build has Metal). Without it, this module estimates it from the RAM size by the rule that published
llama.cpp logs of real machines show ("recommendedMaxWorkingSetSize = ... MB"):

    16 GiB (M1 Pro) -> 11453.25 MB, 32 GiB -> 22906.50 MB      2/3 of RAM, rounded up to 16 KiB pages
    36 GiB (M4 Max) -> 28991.03 MB, 64 GiB (M2 Max) -> 51539.61 MB      3/4 of RAM

Some machines on later macOS releases report more (30150.67 MB, 78%, on a 36 GiB M3 Max), so the
estimate errs low. A limit the user set with ``sysctl iogpu.wired_limit_mb`` replaces the default.
"""

from __future__ import annotations

from collections.abc import Callable

from appliance.hardware.profile import GpuInfo
from appliance.hardware.sysctl import read_sysctl

_PAGE_BYTES = 16 * 1024  # Apple silicon's VM page
_TWO_THIRDS_UP_TO_BYTES = 32 << 30


def metal_working_set_bytes(memsize_bytes: int, wired_limit_mb: int = 0) -> int:
    """The GPU working-set budget macOS allows on a Mac with ``memsize_bytes`` of RAM."""
    if wired_limit_mb > 0:
        return min(wired_limit_mb << 20, memsize_bytes)
    if memsize_bytes <= _TWO_THIRDS_UP_TO_BYTES:
        pages = -(-memsize_bytes * 2 // (3 * _PAGE_BYTES))  # ceiling division
        return pages * _PAGE_BYTES
    return memsize_bytes * 3 // 4


def _int(value: str | None) -> int:
    try:
        return int((value or "").strip())
    except ValueError:
        return 0


def detect_metal(sysctl: Callable[[str], str | None] = read_sysctl) -> GpuInfo | None:
    """The Apple GPU of this Mac, or None where it is not a Mac with Apple silicon.

    ``sysctl`` returns a sysctl key's value or None (tests pass recorded values); the default reads the
    real ones and returns None everywhere but macOS.
    """
    memsize = _int(sysctl("hw.memsize"))
    if memsize <= 0 or _int(sysctl("hw.optional.arm64")) != 1:
        return None  # not macOS, or an Intel Mac (whose GPUs llama.cpp's Metal backend no longer targets)
    budget = metal_working_set_bytes(memsize, _int(sysctl("iogpu.wired_limit_mb")))
    name = (sysctl("machdep.cpu.brand_string") or "").strip() or "Apple GPU"
    return GpuInfo(
        index=0, backend="metal", name=name, total_bytes=budget, free_bytes=budget, unified_memory=True
    )
