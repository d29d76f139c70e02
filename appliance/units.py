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


_DURATION = re.compile(r"^\s*(-?)((?:\d+(?:\.\d+)?(?:ms|s|m|h|d)?)+)\s*$", re.IGNORECASE)
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)?", re.IGNORECASE)
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str | float) -> float | None:
    """Seconds in ``text`` ("30s", "5m", "1h", "90", and Go's "1h30m" as Ollama's clients write them); a
    negative value means forever (None). Raises ValueError."""
    if isinstance(text, int | float):
        return None if text < 0 else float(text)
    match = _DURATION.match(text)
    parts = _DURATION_PART.findall(match.group(2)) if match else []
    # A unit-less number stands alone: "90" is seconds, "1h30" says nothing clear.
    if not parts or (len(parts) > 1 and not all(unit for _, unit in parts)):
        raise ValueError(f"not a duration: {text!r} (examples: 30s, 5m, 1h, -1 for forever)")
    seconds = sum(float(number) * _SECONDS[(unit or "s").lower()] for number, unit in parts)
    return None if match and match.group(1) == "-" and seconds > 0 else seconds
