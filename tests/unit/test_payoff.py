"""The books of whether guesses paid (appliance.engine.payoff): kept by the number of sequences a step
generates for, fed the step times the H200 showed at 8 chat streams (docs/BENCHMARKS.md, session 7),
and the engine with the embedded model pausing guesses that its books show to lose."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from appliance.engine.batching import BatchingEngine
from appliance.engine.jobs import GenerationJob, JobStream
from appliance.engine.params import SamplingParams
from appliance.engine.payoff import CALM, FIRST_PAUSE, PROBE, TOLERANCE, WINDOW, Payoff
from appliance.engine.speculation import StepCost
from benchmarks.engine_steps import step_sizes
from tests.embedded_llama import embedded_llama
from tests.engine_streams import replies
from tests.unit.test_speculation import COPY

# The H200 at 8 chat streams (f2192da): a step of 8 sequences held 2.78 ms; one of another size right
# after a change 5.6-9.8 ms, and the one after it captures the CUDA graph (about 3.6 ms).
HELD_8 = 0.00278
CHANGED_9 = 0.0075
CHANGED_8 = 0.0056
CAPTURE = 0.0036


def _plain(books: Payoff, sequences: int, seconds: float, steps: int) -> None:
    """``steps`` plain steps of a size held, guesses not allowed (as in a pause)."""
    for _ in range(steps):
        books.allows(sequences)
        books.add(sequences, sequences, seconds, seconds, guessed=False, allowed=False, calm=True, held=True)


def _allowed_steps(books: Payoff, sequences: int) -> int:
    """How many of the next 2,048 steps for ``sequences`` may guess (none taken)."""
    return sum(books.allows(sequences) for _ in range(2048))


def test_a_guess_now_and_then_at_eight_streams_is_paused_as_it_loses() -> None:
    """At 8 streams a slot guesses a token every fourth step and it is refused: each guess changes the
    step's size and back (the H200's slow steps), bringing no token. After one window the books pause
    guessing for FIRST_PAUSE steps, then try again; a second losing window pauses twice as long."""
    books = Payoff()
    _plain(books, 8, HELD_8, 8)
    cycle = [(8, HELD_8), (9, CHANGED_9), (8, CHANGED_8), (8, CAPTURE)]  # (size, seconds)
    for i in range(WINDOW):
        assert books.allows(8)
        size, seconds = cycle[i % 4]
        books.add(8, 8, seconds, seconds, guessed=size > 8, allowed=True, calm=True, held=i % 4 == 0)
    table = books.table()[8]
    assert table["paused"] and table["ratio"] is not None and table["ratio"] < 0.6
    assert not any(books.allows(8) for _ in range(FIRST_PAUSE))
    for i in range(WINDOW):  # tried again, and lost again
        assert books.allows(8)
        size, seconds = cycle[i % 4]
        books.add(8, 8, seconds, seconds, guessed=size > 8, allowed=True, calm=True, held=i % 4 == 0)
    assert 2048 - _allowed_steps(books, 8) == 2 * FIRST_PAUSE


def test_guesses_that_bring_more_than_they_cost_go_on() -> None:
    """Two copying replies: a step of 10 tokens held (4 guesses each, 3 kept on average) takes 3.3 ms
    where a plain one of the 2 sequences takes 1.3: the books keep guessing, and the speed measured."""
    books = Payoff()
    _plain(books, 2, 0.0013, 4)
    for _ in range(4 * WINDOW):
        assert books.allows(2)
        books.add(2, 8, 0.0034, 0.0033, guessed=True, allowed=True, calm=True, held=True)
    row = books.table()[2]
    assert not row["paused"] and row["plain_ms"] == pytest.approx(1.3)
    assert row["ratio"] == pytest.approx(4 * 1.3 / 3.4, abs=0.01)


def test_the_guesses_making_is_counted_and_each_number_of_streams_is_judged_apart() -> None:
    """Pricing guesses that are never made costs a step's share: where that share is above
    1 - TOLERANCE the books pause (the lookups and pricing stop too); two streams' good guesses keep
    going beside."""
    books = Payoff()
    _plain(books, 8, HELD_8, 4)
    _plain(books, 2, 0.0013, 4)
    making = HELD_8 * 0.05  # the pricing of 8 slots' guesses: 5% of the step
    for _ in range(WINDOW):
        books.allows(8)
        books.add(8, 8, HELD_8 + making, HELD_8, guessed=False, allowed=True, calm=True, held=True)
        books.allows(2)
        books.add(2, 5, 0.0024, 0.0023, guessed=True, allowed=True, calm=True, held=True)
    table = books.table()
    assert table[8]["paused"] and table[8]["ratio"] == pytest.approx(1 / 1.05, abs=0.005)
    assert TOLERANCE < 1 / 1.02  # a share of 2% is within it
    assert not table[2]["paused"]


def test_one_streams_steps_are_left_to_the_drafters() -> None:
    """A step of one sequence is what the drafters' tables hold: its guesses are never paused."""
    books = Payoff()
    _plain(books, 1, 0.0011, 8)
    for _ in range(4 * WINDOW):
        assert books.allows(1)
        books.add(1, 1, 0.009, 0.009, guessed=True, allowed=True, calm=True, held=True)
    assert 1 not in books.table()


def test_where_plain_steps_are_unknown_a_few_are_taken_to_measure_them() -> None:
    """Slots that hold guess lengths from their first step leave no plain step to compare with: at the
    end of their first window the books take PROBE plain steps, then judge the window on them (once a
    step of a size held is seen: the change back to guessing is the pause's)."""
    books = Payoff()
    for _ in range(WINDOW):
        assert books.allows(4)
        books.add(4, 4, 0.0032, 0.0030, guessed=True, allowed=True, calm=True, held=True)
    assert books.table()[4] == {"plain_ms": None, "ratio": None, "paused": True}
    assert not any(books.allows(4) for _ in range(PROBE))
    for _ in range(PLAIN := PROBE - CALM):
        books.add(4, 4, 0.0020, 0.0020, guessed=False, allowed=False, calm=True, held=True)
    assert books.allows(4)
    books.add(4, 4, 0.009, 0.009, guessed=True, allowed=True, calm=True, held=False)  # the change back
    assert books.table()[4]["ratio"] is None
    books.add(4, 4, 0.0032, 0.0030, guessed=True, allowed=True, calm=True, held=True)
    row = books.table()[4]
    assert row["plain_ms"] == pytest.approx(2.0) and PLAIN >= 3
    assert row["ratio"] == pytest.approx(2.0 / 3.2, abs=0.01) and row["paused"]


def test_steps_after_a_request_came_or_went_are_left_out() -> None:
    """A step right after a stream joined or left pays a size change that plain decoding pays too: it is
    not counted (``calm``), nor is a step that read a prompt."""
    books = Payoff()
    _plain(books, 4, 0.002, 4)
    for _ in range(10 * WINDOW):
        books.allows(4)
        books.add(4, 4, 0.009, 0.009, guessed=False, allowed=True, calm=False, held=False)
    assert books.table()[4]["ratio"] is None and not books.table()[4]["paused"]


class DearGuesses(StepCost):
    """A machine where the drafters' model of the steps is wrong, as on the H200 at 8 streams: it prices
    every step at 1 ms, so a guess always looks worth it, while a step that holds a guess takes 20 ms
    there (charged in place of this machine's times) and a plain one 1 ms, right after a change as
    later."""

    def seconds(self, tokens: int) -> float | None:
        return 0.001 + 1e-6 * tokens

    def clock(self, tokens: int, seconds: float, run: int = StepCost.HELD) -> float:
        return 0.001 if tokens <= 2 else 0.020  # 2: the streams

    def costly(self) -> bool:
        return False  # a size change costs no more than its step: steps of two sequences may guess


@pytest.fixture(scope="module")
def model() -> Iterator[Any]:
    with embedded_llama(n_ctx=4096, n_seq_max=2, flash_attn="on") as loaded:
        yield loaded


def _run(model: Any, engine: BatchingEngine, tokens: int) -> tuple[list[str], list[int]]:
    """Two replies copying their prompt side by side, greedy, ``tokens`` each: the replies and each
    step's size."""
    loop = asyncio.new_event_loop()
    model.forget()
    streams = []
    sampling = SamplingParams(temperature=0.0, ignore_eos=True)
    with step_sizes(model) as sizes:
        for prompt in (COPY, COPY):
            stream = JobStream(loop)
            ids = model.tokenize(prompt, add_special=True, parse_special=True)
            engine.start(GenerationJob(stream, ids, sampling, tokens))
            streams.append(stream)
        while engine.active:
            engine.step()
    try:
        return replies(loop, streams), sizes
    finally:
        loop.close()


def test_the_engine_pauses_guesses_its_books_show_to_lose(model: Any) -> None:
    """Two streams copying their prompt, on a machine where a step with guesses costs far more than the
    drafters think: without the books the engine guesses in most steps; with them it pauses after its
    first window and again after the window that follows the pause, guessing in under half as many
    steps. The replies are the same."""
    unchecked = BatchingEngine(model, draft_max=2)
    unchecked.step_cost, unchecked.payoff = DearGuesses(), None
    same, sizes = _run(model, unchecked, 300)
    unchecked_share = sum(size > 2 for size in sizes[1:]) / len(sizes[1:])
    assert unchecked_share > 0.6, sizes
    engine = BatchingEngine(model, draft_max=2)
    engine.step_cost = DearGuesses()
    guessed, sizes = _run(model, engine, 300)
    assert guessed == same  # plain decoding's (tests/unit/test_speculation.py compares the two)
    assert engine.payoff is not None and engine.payoff.table()[2]["paused"]
    assert sum(size > 2 for size in sizes[1:]) / len(sizes[1:]) < unchecked_share / 2, sizes
