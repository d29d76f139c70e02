"""Sizes as people write them: "6GiB", "512M", "8GB", "1073741824"."""

from __future__ import annotations

import re

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)(b?)\s*$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def parse_size(text: str | int) -> int:
    """Bytes in ``text``. ``GiB``/``G`` are powers of 1024, ``GB`` powers of 1000. Raises ValueError."""
    if isinstance(text, int):
        if text < 0:
            raise ValueError("a size cannot be negative")
        return text
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (examples: 6GiB, 512MiB, 8GB)")
    number, unit, binary, byte = match.groups()
    power = _POWERS[unit.lower()]
    base = 1000 if (byte and not binary and unit) else 1024
    return int(float(number) * base**power)
