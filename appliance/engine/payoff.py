"""Whether speculation's guesses pay, measured: the engine keeps the books of the steps it guessed in
and pauses guessing where they brought fewer tokens a second than plain decoding.

The drafters decide each guess from a model of the machine (appliance.engine.speculation: what a step
of each size takes, what a size change costs, how often guesses are kept). That model is measured on
steps of one size whatever they hold, and a step of one sequence and its guesses is not the step of as
many tokens from several sequences: on an H200 a step of 8 sequences takes 2.78 ms where one of 8 tokens
of one sequence takes 1.65, and its size changes 5.6-9.8 ms. There, at 8 chat streams, the few guesses
cost 19% of the aggregate. So for steps of ``FROM_SEQUENCES`` or more generating sequences (``b``) the
engine keeps books:

- Plain steps of b sequences: the seconds of the last few of a size held (no guess in them, no prompt
  read), what plain decoding costs there (b tokens a step).
- Steps where guesses were allowed: over a window of ``WINDOW`` of them, the tokens they brought and
  the seconds they took, the guesses' making included (a draft model's decodes; prompt lookup's
  pricing). A step counts only once b has held, with no prompt read, for ``CALM`` steps (a step right
  after a request came or went pays for a size change plain decoding pays too), and not before the
  first step of a size held after a pause (the change back to guessing is the pause's cost).

At the end of a window, where the tokens brought, at plain decoding's cost, come to less than
``TOLERANCE`` of the seconds taken, guessing pauses at b for ``FIRST_PAUSE`` steps at b, doubling with
each window that loses again up to ``LONGEST_PAUSE`` (the replies change: the next window tries again).
Where no plain step of b sequences is known yet when a window ends, a few plain steps are taken to
measure them.

A step of one sequence is what the model's tables hold for a size (the token and its guesses), so it is
priced right there, and not judged again: with a window's worth of its cheap steps (35 ms on the H200)
the one size change a trial begins with would weigh as much as the guesses' gain.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

FROM_SEQUENCES = 2  # the fewest generating sequences whose steps are judged
WINDOW = 32  # steps with guesses allowed, judged together
TOLERANCE = 0.97  # the share of plain decoding's speed below which guesses are paused
FIRST_PAUSE = 64  # steps at b without guesses after a window that lost; doubled after each that did
LONGEST_PAUSE = 1024
CALM = 3  # steps of as many sequences and no prompt in a row, this one included, before a step counts
PLAIN_RECENT = 16  # plain steps whose mean stands for plain decoding
PLAIN_TRUSTED = 3  # plain steps before their mean is used
PROBE = CALM + PLAIN_TRUSTED  # plain steps taken to measure plain decoding where it is not known


@dataclass
class Books:
    """The accounts for steps of one number of generating sequences."""

    plain: deque[float] = field(default_factory=lambda: deque(maxlen=PLAIN_RECENT))  # seconds of plain steps
    tokens: int = 0  # brought by the window's steps so far
    seconds: float = 0.0  # taken by them
    steps: int = 0
    clock: int = 0  # steps at this number of sequences so far
    paused_until: int = 0  # no guesses until the clock reaches this
    pause: int = FIRST_PAUSE  # the next pause's length
    ratio: float | None = None  # the last window's speed against plain decoding's
    resumed: bool = False  # a pause ended, and no step of a size held has been seen since

    def plain_seconds(self) -> float | None:
        return sum(self.plain) / len(self.plain) if len(self.plain) >= PLAIN_TRUSTED else None


class Payoff:
    """The books, by number of generating sequences; ``allows`` says whether a step may guess."""

    def __init__(self) -> None:
        self._books: dict[int, Books] = {}

    def allows(self, sequences: int) -> bool:
        """Whether the step about to be decoded, generating for ``sequences``, may guess (each call is one
        step: the pauses count these)."""
        if sequences < FROM_SEQUENCES:
            return True
        books = self._books.setdefault(sequences, Books())
        books.clock += 1
        return books.clock > books.paused_until

    def add(self, sequences: int, brought: int, seconds: float, decode_seconds: float, *, guessed: bool,
            allowed: bool, calm: bool, held: bool) -> None:  # fmt: skip
        """A step for ``sequences`` generating sequences brought ``brought`` tokens in ``seconds`` (its
        guesses' making included), ``decode_seconds`` of them the decode and sampling; ``guessed``:
        some were decoded in it; ``allowed``: it might guess; ``calm``: as many sequences and no prompt
        for ``CALM`` steps; ``held``: the third or later of its size in a row (StepCost.HELD: on a GPU
        the decode ran its captured graph)."""
        if not calm or sequences < FROM_SEQUENCES:
            return
        books = self._books.setdefault(sequences, Books())
        if not guessed and held:
            books.plain.append(decode_seconds)
        if not allowed:
            books.resumed = True
            return
        if books.resumed and not held:
            return
        books.resumed = False
        books.tokens += brought
        books.seconds += seconds
        books.steps += 1
        if books.steps >= WINDOW:
            self._judge(sequences, books)

    @staticmethod
    def _judge(sequences: int, books: Books) -> None:
        plain = books.plain_seconds()
        if plain is None:  # measure plain decoding first; the window is judged after
            books.paused_until = books.clock + PROBE
            return
        books.ratio = books.tokens * plain / sequences / books.seconds
        if books.ratio < TOLERANCE:
            books.paused_until = books.clock + books.pause
            log.debug("guesses at %d sequences: %.3fx plain decoding; paused for %d steps", sequences,
                      books.ratio, books.pause)  # fmt: skip
            books.pause = min(2 * books.pause, LONGEST_PAUSE)
        else:
            log.debug("guesses at %d sequences: %.3fx plain decoding", sequences, books.ratio)
            books.pause = FIRST_PAUSE
        books.tokens, books.seconds, books.steps = 0, 0.0, 0

    def table(self) -> dict[int, dict[str, float | bool | None]]:
        """For each number of sequences seen: plain decoding's step (ms), the last window's speed against
        it, and whether guesses are paused now."""
        out: dict[int, dict[str, float | bool | None]] = {}
        for sequences, books in sorted(list(self._books.items())):  # a copy: the engine's thread adds
            plain = books.plain_seconds()
            out[sequences] = {
                "plain_ms": round(plain * 1000, 3) if plain is not None else None,
                "ratio": round(books.ratio, 3) if books.ratio is not None else None,
                "paused": books.clock < books.paused_until,
            }
        return out
