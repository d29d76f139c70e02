"""The CPU: model name, core counts and the SIMD features llama.cpp can use."""

from __future__ import annotations

import contextlib
import dataclasses
import platform
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from appliance.hardware.sysctl import read_sysctl

_X86_FEATURES = ("avx", "avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "f16c", "fma", "amx_int8")
_ARM_FEATURES = {"asimd": "neon", "asimddp": "dotprod", "sve": "sve", "i8mm": "i8mm"}
# The same features as bits of the auxiliary vector's AT_HWCAP (16) and AT_HWCAP2 (26) on Linux arm64
# (asm/hwcap.h): what ggml-cpu itself reads (getauxval) and what /proc/cpuinfo's "Features" line is
# made from. Under qemu-user emulation /proc/cpuinfo describes the host's CPU; the vector, the emulated one.
_HWCAP_FEATURES = {
    (16, 1 << 1): "neon",
    (16, 1 << 20): "dotprod",
    (16, 1 << 22): "sve",
    (26, 1 << 13): "i8mm",
}
# macOS names the same ARM features in sysctl keys (what ggml-cpu itself reads on Apple silicon).
_DARWIN_ARM_FEATURES = {
    "hw.optional.neon": "neon",
    "hw.optional.arm.FEAT_DotProd": "dotprod",
    "hw.optional.arm.FEAT_SVE": "sve",
    "hw.optional.arm.FEAT_I8MM": "i8mm",
}
# ARM's own cores by "CPU part" (implementer 0x41), as lscpu names them: Linux on ARM boards often
# prints no model name at all.
_ARM_PARTS = {
    "0xd03": "Cortex-A53",
    "0xd04": "Cortex-A35",
    "0xd05": "Cortex-A55",
    "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72",
    "0xd09": "Cortex-A73",
    "0xd0a": "Cortex-A75",
    "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1",
    "0xd0d": "Cortex-A77",
    "0xd40": "Neoverse-V1",
    "0xd41": "Cortex-A78",
    "0xd44": "Cortex-X1",
    "0xd46": "Cortex-A510",
    "0xd47": "Cortex-A710",
    "0xd48": "Cortex-X2",
    "0xd49": "Neoverse-N2",
    "0xd4f": "Neoverse-V2",
}


@dataclass(frozen=True)
class CpuInfo:
    model: str
    arch: str
    cores_physical: int
    cores_logical: int
    features: tuple[str, ...]
    # The fast cores of a big.LITTLE chip (RK3588: 4 Cortex-A76 of 8 cores; Apple M2: 4 of 8), all of
    # them where the cores are alike; None where the OS does not say.
    cores_performance: int | None = None


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


def arm_features_from_auxv(data: bytes) -> tuple[str, ...]:
    """The SIMD features in the bytes of a 64-bit Linux process's /proc/self/auxv (pairs of native
    unsigned longs: type, value), in the order /proc/cpuinfo's parse gives them."""
    entries = dict(struct.iter_unpack("=QQ", data[: len(data) // 16 * 16]))
    found = {name for (kind, bit), name in _HWCAP_FEATURES.items() if entries.get(kind, 0) & bit}
    return tuple(name for name in _ARM_FEATURES.values() if name in found)


def arm_core_name(text: str) -> str:
    """The core's name from the "CPU part" lines of an ARM /proc/cpuinfo ("Cortex-A76"), or ""."""
    implementer = re.search(r"^CPU implementer\s*:\s*(0x[0-9a-f]+)", text, re.M | re.I)
    if implementer is None or implementer.group(1).lower() != "0x41":
        return ""
    parts = re.findall(r"^CPU part\s*:\s*(0x[0-9a-f]+)", text, re.M | re.I)
    names = dict.fromkeys(_ARM_PARTS.get(p.lower(), "") for p in parts)
    return " + ".join(n for n in names if n)


def cpu_from_cpuinfo(
    text: str, arch: str, cores_physical: int, cores_logical: int, cores_performance: int | None = None
) -> CpuInfo:
    """A Linux CPU from the text of /proc/cpuinfo, the core counts the OS reports and the count of its
    performance cores (``performance_cores``)."""
    arch = arch.lower()
    model, features = parse_cpuinfo(text, arch)
    name = model or arm_core_name(text) or arch
    return CpuInfo(name, arch, cores_physical, cores_logical, features, cores_performance)


def performance_cores(ratings: Sequence[int]) -> int | None:
    """How many CPUs have the highest rating (the kernel's cpu_capacity, or cpufreq's maximum
    frequency): the performance cores. None without ratings."""
    return ratings.count(max(ratings)) if ratings else None


def read_cpu_ratings(root: Path = Path("/sys/devices/system/cpu")) -> list[int]:
    """Each CPU's capacity as the scheduler sees it (``cpuN/cpu_capacity``, 1024 for the fastest, set
    from the device tree's capacity-dmips-mhz and each cluster's top frequency), else its cpufreq
    maximum; [] where neither is readable for every CPU (x86 without either, containers hiding sysfs)."""
    cpus = sorted(p for p in root.glob("cpu[0-9]*") if p.name[3:].isdigit())
    for name in ("cpu_capacity", "cpufreq/cpuinfo_max_freq"):
        try:
            return [int((cpu / name).read_text().strip()) for cpu in cpus]
        except (OSError, ValueError):
            continue
    return []


def cpu_from_sysctl(sysctl: Callable[[str], str | None], arch: str) -> CpuInfo:
    """A macOS CPU from sysctl values (``sysctl`` returns a key's value, or None where it is absent)."""
    arch = arch.lower()
    logical = _int(sysctl("hw.logicalcpu")) or 1
    physical = _int(sysctl("hw.physicalcpu")) or logical
    model = (sysctl("machdep.cpu.brand_string") or "").strip() or arch
    # Apple silicon numbers its core kinds: perflevel0 is the performance cores.
    performance = _int(sysctl("hw.perflevel0.physicalcpu")) or None
    if arch in ("arm64", "aarch64"):
        features = tuple(name for key, name in _DARWIN_ARM_FEATURES.items() if _int(sysctl(key)))
    else:  # Intel Macs list CPUID flags in upper case, AVX as "AVX1.0"
        words = f"{sysctl('machdep.cpu.features') or ''} {sysctl('machdep.cpu.leaf7_features') or ''}"
        flags = {w.lower().replace("avx1.0", "avx").replace("_", "") for w in words.split()}
        features = tuple(f for f in _X86_FEATURES if f.replace("_", "") in flags)
    return CpuInfo(model, arch, physical, logical, features, performance)


def _int(value: str | None) -> int:
    try:
        return int((value or "").strip())
    except ValueError:
        return 0


def detect_cpu(
    cpuinfo_path: Path = Path("/proc/cpuinfo"),
    sysctl: Callable[[str], str | None] = read_sysctl,
    system: str | None = None,
    auxv_path: Path = Path("/proc/self/auxv"),
) -> CpuInfo:
    """This machine's CPU. Missing sources give empty fields, never an error. On Linux arm64 where
    /proc/cpuinfo names no ARM features (qemu-user shows the host's), they come from the auxiliary
    vector, as llama.cpp reads them."""
    arch = platform.machine().lower()
    if (system or platform.system()) == "Darwin":
        return cpu_from_sysctl(sysctl, arch)
    try:
        text = cpuinfo_path.read_text(errors="replace")
    except OSError:
        text = ""
    logical = psutil.cpu_count(logical=True) or 1
    physical = psutil.cpu_count(logical=False) or logical
    cpu = cpu_from_cpuinfo(text, arch, physical, logical, performance_cores(read_cpu_ratings()))
    if arch in ("aarch64", "arm64") and not cpu.features:
        with contextlib.suppress(OSError):
            cpu = dataclasses.replace(cpu, features=arm_features_from_auxv(auxv_path.read_bytes()))
    if cpu.model == arch and platform.processor():
        return dataclasses.replace(cpu, model=platform.processor())
    return cpu
