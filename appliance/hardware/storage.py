"""The storage a model file is read from, and how fast: a cold start (nothing in the page cache) reads
the whole file, which on a board's SD card takes longer than anything else the daemon does.

The speeds are sustained sequential reads, conservative figures for each kind of device (what a
typical one reaches in published measurements, not its interface's ceiling): an A1/A2 card in a
Raspberry Pi 4 reads about 40 MB/s (its SD bus, DDR50, tops out near 45; a Pi 5's SDR104 reaches about
80), eMMC 5.1 modules on RK3588 boards about 150 MB/s, a SATA or USB 3 SSD about 350 MB/s, NVMe (a Pi 5's
single PCIe 2.0 lane included) at least 400 MB/s, a spinning disk about 120 MB/s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MB = 1000 * 1000
READ_BYTES_PER_S = {"sd": 40 * MB, "emmc": 150 * MB, "hdd": 120 * MB, "ssd": 350 * MB, "nvme": 400 * MB}
KIND_NAMES = {"sd": "an SD card", "emmc": "eMMC", "hdd": "a hard disk", "ssd": "an SSD", "nvme": "NVMe"}


@dataclass(frozen=True)
class StorageInfo:
    device: str  # the whole disk's kernel name: mmcblk0, nvme0n1, sda
    kind: str  # sd | emmc | hdd | ssd | nvme

    @property
    def read_bytes_per_s(self) -> int:
        return READ_BYTES_PER_S[self.kind]

    def cold_start_s(self, file_bytes: int) -> float:
        """Seconds to read ``file_bytes`` from this device with nothing cached (mmap reads it all on
        the first pass over the weights)."""
        return file_bytes / self.read_bytes_per_s


def _text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def storage_of_disk(disk: Path) -> StorageInfo | None:
    """The kind of the whole disk at ``disk`` (its /sys/block/NAME directory), or None where it is not
    one we know (a virtual disk, a RAM disk, a network mount)."""
    name = disk.name
    if name.startswith("mmcblk"):
        # The MMC core's device/type: "SD" for a card, "MMC" for soldered or socketed eMMC.
        kind = {"SD": "sd", "MMC": "emmc"}.get(_text(disk / "device" / "type"))
        return StorageInfo(name, kind) if kind else None
    if name.startswith("nvme"):
        return StorageInfo(name, "nvme")
    if name.startswith("sd"):
        return StorageInfo(name, "hdd" if _text(disk / "queue" / "rotational") == "1" else "ssd")
    return None


def whole_disk(device: Path) -> Path:
    """The whole disk of a block device's sysfs directory: a partition's parent (it has a
    ``partition`` file), else the device itself."""
    return device.parent if (device / "partition").exists() else device


def detect_storage(path: Path, sys_dev_block: Path = Path("/sys/dev/block")) -> StorageInfo | None:
    """The storage ``path`` lives on, or None where that is not a local disk we know (overlay and tmpfs
    in containers, device-mapper and RAID, virtual disks)."""
    try:
        st_dev = path.stat().st_dev
    except OSError:
        return None
    device = sys_dev_block / f"{os.major(st_dev)}:{os.minor(st_dev)}"
    if not device.exists():
        return None
    return storage_of_disk(whole_disk(device.resolve()))
