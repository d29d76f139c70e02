"""Integer bounds as GBNF (appliance/engine/int_range.py): the grammar accepts exactly the integers in the
range, and stays small for bounds of any width (it once doubled with every digit)."""

from __future__ import annotations

import random
import re

import pytest

from appliance.engine.int_range import integer_range_rule


def _regex(rule: str) -> re.Pattern[str]:
    """The rule as a Python regex: its literals, classes, groups, alternatives and ``{n,}`` mean the same."""
    pattern = re.sub(r'"([^"]*)"', lambda m: re.escape(m.group(1)), rule).replace(" ", "")
    return re.compile(pattern)


@pytest.mark.parametrize(
    ("low", "high"),
    [(0, 120), (-15, 120), (7, None), (None, 5), (-(10**18), 10**18), (10**5, 10**5),
     (123456789123456789, 987654321987654321987), (-(10**30), -(10**29) + 17)],
)  # fmt: skip
def test_exactly_the_range(low: int | None, high: int | None) -> None:
    rule = integer_range_rule(low, high)
    assert len(rule) < 20_000
    matcher = _regex(rule)
    rng = random.Random(0)
    lo = low if low is not None else -(10**25)
    hi = high if high is not None else 10**25
    edges = [lo - 1, lo, lo + 1, hi - 1, hi, hi + 1, 0, -1, 1, 10 * hi + 3]
    samples = edges + [rng.randint(lo - 1000, hi + 1000) for _ in range(300)]
    for value in samples:
        inside = (low is None or value >= low) and (high is None or value <= high)
        assert bool(matcher.fullmatch(str(value))) == inside, (low, high, value)
    assert not matcher.fullmatch("01") and not matcher.fullmatch("-0")
