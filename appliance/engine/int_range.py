"""GBNF for integers within bounds, so JSON schemas' minimum/maximum are enforced while sampling.

The grammar converter bundled with llama-cpp-python ignores integer bounds; llama.cpp's C++ one does
not, and neither may we: a schema that says ``"maximum": 120`` must never yield 2638.
"""

from __future__ import annotations


def _same_length(lo: str, hi: str) -> str:
    """Digit strings of one length between ``lo`` and ``hi`` (inclusive), as a GBNF expression."""
    if lo.strip("0") == "" and hi.strip("9") == "":
        # Any digits: said once, rather than split by first digit, which doubles the grammar at every
        # digit (a 19-digit bound was 20 MB of grammar and seconds of work for one request).
        return " ".join(["[0-9]"] * len(lo))
    if len(lo) == 1:
        return f'"{lo}"' if lo == hi else f"[{lo}-{hi}]"
    if lo[0] == hi[0]:
        return f'"{lo[0]}" ({_same_length(lo[1:], hi[1:])})'
    rest = len(lo) - 1
    parts = [f'"{lo[0]}" ({_same_length(lo[1:], "9" * rest)})']
    if int(hi[0]) - int(lo[0]) > 1:
        parts.append(f"[{int(lo[0]) + 1}-{int(hi[0]) - 1}] " + " ".join(["[0-9]"] * rest))
    parts.append(f'"{hi[0]}" ({_same_length("0" * rest, hi[1:])})')
    return " | ".join(parts)


def _non_negative(lo: int, hi: int | None) -> str:
    """Decimal numbers (no leading zeros) from ``lo`` to ``hi`` (None: unbounded), ``0 <= lo``."""
    parts = []
    low = lo
    top = hi if hi is not None else 10 ** max(len(str(lo)), 1) - 1
    while low <= top:
        digits = len(str(low))
        end = min(top, 10**digits - 1)
        parts.append(f"({_same_length(str(low), str(end))})")
        low = end + 1
    if hi is None:
        # Any number with more digits than the largest listed.
        parts.append(f"[1-9] [0-9]{{{len(str(top))},}}")
    return " | ".join(parts)


def integer_range_rule(minimum: int | None, maximum: int | None) -> str:
    """A GBNF expression for JSON integers ``minimum <= x <= maximum`` (either may be None)."""
    if minimum is not None and maximum is not None and minimum > maximum:
        raise ValueError(f"empty integer range: minimum {minimum} > maximum {maximum}")
    parts = []
    # Negative part: -x for x in [max(1, -maximum), -minimum].
    if minimum is None or minimum < 0:
        neg_lo = 1 if maximum is None or maximum >= 0 else -maximum
        neg_hi = None if minimum is None else -minimum
        parts.append(f'"-" ({_non_negative(neg_lo, neg_hi)})')
    if maximum is None or maximum >= 0:
        parts.append(_non_negative(max(minimum or 0, 0), maximum))
    return " | ".join(parts)
