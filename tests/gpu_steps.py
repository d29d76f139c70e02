"""The H200's measured steps for the default model (benchmarks/step_cost.py, docs/BENCHMARKS.md): at a
size held (CUDA replays the graph it captured) and right after a size change (kernels launched one by
one), for tests of the engine's decisions where a size change costs several steps."""

from __future__ import annotations

from pathlib import Path

from appliance.engine.speculation import StepPrice
from benchmarks.engine_steps import StepTimes, learned

H200 = StepTimes(Path(__file__).parents[1] / "benchmarks" / "steps" / "h200-smollm2-135m-q4_1.json")


def h200_price(base: int, last: int) -> StepPrice:
    """The price of a step of ``base`` tokens after one of ``last``, every size of the H200's tables
    measured both ways."""
    price = learned(H200).price(base, last)
    assert price is not None
    return price
