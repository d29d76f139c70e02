"""benchmarks/engine_steps.py's accounts of a reply: where a guessed reply leaves plain decoding's, and
each step by its place in a run of one size (what a GPU's CUDA graphs make of a size change)."""

from __future__ import annotations

from appliance.engine.tokens import common_prefix
from benchmarks.engine_steps import by_place


def test_a_guessed_reply_differs_from_plain_at_its_first_other_token() -> None:
    assert common_prefix([1, 2, 3, 4], [1, 2, 9, 4]) == 2
    assert common_prefix([1, 2, 3], [1, 2, 3]) == 3
    assert common_prefix([1, 2, 3], [1, 2]) == 2  # never differs: the common length


def test_steps_are_told_apart_by_their_place_in_a_run_of_one_size() -> None:
    steps = [(300, 9.0), (1, 3.0), (1, 4.5), (1, 1.2), (1, 1.3), (8, 4.1), (8, 5.9), (8, 1.9), (1, 3.1)]
    assert by_place(steps) == {  # the prompt's step (the first) left out
        1: [[3.0, 3.1], [4.5], [1.2, 1.3]],
        8: [[4.1], [5.9], [1.9]],
    }
