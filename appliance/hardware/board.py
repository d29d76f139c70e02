"""The board, where the firmware names it: Raspberry Pi, Jetson, Orange Pi and other single-board machines."""

from __future__ import annotations

from pathlib import Path


def parse_board_model(raw: bytes) -> str | None:
    """The board's name from the bytes of a device-tree ``model`` property (a NUL-terminated string)."""
    name = raw.split(b"\0", 1)[0].decode("utf-8", errors="replace").strip()
    return name or None


def detect_board(path: Path = Path("/proc/device-tree/model")) -> str | None:
    """The board's name from the device tree, or None where there is none (PCs, Macs, most servers)."""
    try:
        return parse_board_model(path.read_bytes())
    except OSError:
        return None
