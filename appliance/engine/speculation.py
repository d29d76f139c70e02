"""Prompt-lookup speculative decoding (llama.cpp's n-gram drafting; "prompt lookup decoding"): the tokens
that followed the latest earlier occurrence of the newest n-gram, in the prompt or the reply so far, are
guessed to come next. One decode reads the sampled token and the guesses together; sampling at each
position in turn keeps the guesses that agree with what it samples there, and the first that does not
is replaced by the sampled token. Every kept token is sampled from the model's own distribution at its
position, so the output is the one plain decoding gives (at any temperature), only sooner when guesses
are kept: a reply that repeats its prompt (an edit of code, a quote, a summary with names) runs several
tokens a decode.

Whether a guess pays depends on the machine: a GPU reads a few more tokens in one decode for little
more than one, while a small CPU pays for each (on a 2-core x86 VM, 17 tokens took 13 times one). Nor is
the cost a line: on an H200 the default model's step takes 1.0 ms for 1 token, 1.6 ms for 7 and 3.1 ms
for 9 (llama.cpp's CUDA matrix-vector kernels take at most 8 rows; past that a slower general kernel
runs). So the engine learns what its own generation steps take at each size (``StepCost``), each slot
keeps how often its guesses are kept (``NgramDrafter.p``), and a guess is made only as long as the
tokens the step is expected to bring per second beat plain decoding; its length likewise. The length
is also capped by how the last guesses fared: doubled while they are kept whole, back to the part that
was kept when one is refused.
"""

from __future__ import annotations

import bisect
import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

# The n-gram whose earlier occurrence is looked up: three tokens rarely repeat by chance in free text,
# and do in copied text (llama.cpp's prompt-lookup examples use 3 as well).
NGRAM = 3
FIRST_DRAFT = 4
# A slot that stopped guessing (they did not pay) still tries one token this often: a reply may turn into
# a copy of its prompt after some words of its own. Rarely: on a CPU a probe's step costs about two, and
# one in 8 chances put those slow steps into the inter-token latency's 95th percentile (agent workload).
PROBE_EVERY = 32
# A guess is made only where it is expected to bring this much more than plain decoding: where it brings
# about the same, it only makes tokens come in bursts (a slower step, then several at once).
MARGIN = 1.1


class StepCost:
    """The seconds a generation step takes by its size (tokens decoded), learned from the engine's own
    steps (only steps that read no prompt): for each size, the median of its last few steps once there
    are ``TRUSTED`` of them (a size's first decode may be far slower: buffers grown, kernels loaded; and
    a one-off pause must not stop guesses of that size for good); between and beyond the sizes known,
    straight lines through the nearest two."""

    RECENT = 5  # steps of a size remembered
    TRUSTED = 3  # steps of a size before its time is used

    def __init__(self) -> None:
        self._steps: dict[int, deque[float]] = {}
        self._seconds: dict[int, float] = {}  # the sizes trusted, and their median time
        self._sizes: list[int] = []  # the same sizes, in order

    def add(self, tokens: int, seconds: float) -> None:
        steps = self._steps.setdefault(tokens, deque(maxlen=self.RECENT))
        steps.append(seconds)
        if len(steps) >= self.TRUSTED:
            if tokens not in self._seconds:
                bisect.insort(self._sizes, tokens)
            self._seconds[tokens] = statistics.median(steps)

    def table(self) -> dict[int, float]:
        """Each size trusted so far and its seconds, smallest first."""
        return {n: self._seconds[n] for n in self._sizes}

    def seconds(self, tokens: int) -> float | None:
        """What a step of ``tokens`` tokens takes: as measured, else read off the line through the
        nearest measured sizes on either side (the two largest above them, the two smallest below, never
        falling); None until two sizes are trusted."""
        known, sizes = self._seconds, self._sizes
        if tokens in known:
            return known[tokens]
        if len(sizes) < 2:
            return None
        i = bisect.bisect(sizes, tokens)  # sizes[:i] are below, sizes[i:] above
        a, b = sizes[min(max(i - 1, 0), len(sizes) - 2)], sizes[min(max(i, 1), len(sizes) - 1)]
        slope = max((known[b] - known[a]) / (b - a), 0.0)
        # Below the smallest size the line may reach zero; a step's time per token only falls with its
        # size, so a smaller step takes at least its share of the smallest one's.
        line = known[a] + slope * (tokens - a)
        return max(line, known[sizes[0]] * tokens / sizes[0]) if tokens < sizes[0] else line

    def price(self, base: int) -> StepPrice | None:
        """What guesses cost in a step that holds ``base`` tokens without them; None while unknown."""
        if self.seconds(base) is None or self.seconds(base + 1) is None:
            return None
        return StepPrice(base, lambda n: self.seconds(n) or 0.0)


@dataclass(frozen=True)
class StepPrice:
    """A step about to be decoded: ``base`` tokens in it already (each generating slot's next token,
    and the guesses of the slots before), and ``seconds(n)``, what a step of n tokens takes."""

    base: int
    seconds: Callable[[int], float]

    def plus(self, tokens: int) -> StepPrice:
        """The step after ``tokens`` more were put in it."""
        return replace(self, base=self.base + tokens)


def best_length(p: float, price: StepPrice, most: int, per_guess: float = 0.0) -> int:
    """The guess length (0 to ``most``) that brings the step the most tokens per second when each guessed
    token is kept with probability ``p`` (given the ones before it were): k guesses make the step
    ``price.seconds(base + k)`` long, plus k * ``per_guess`` for making them (a draft model's decodes; 0
    for prompt lookup), and bring 1 + p + p^2 + ... + p^k tokens where plain decoding brings 1. 0 unless
    some length beats plain decoding by ``MARGIN``, for this slot's part of the step (its one token of
    the ``base``: a slot beside others need not speed the whole step up by as much alone)."""
    base = price.base
    best, best_rate = 0, (base - 1 + MARGIN) / price.seconds(base)
    expected, term = 1.0, 1.0
    for k in range(1, most + 1):
        term *= p
        expected += term
        rate = (base - 1 + expected) / (price.seconds(base + k) + k * per_guess)
        if rate > best_rate:
            best, best_rate = k, rate
    return best


class Acceptance:
    """What a slot's guesses, of any source, have brought: tokens guessed and kept over the request (for
    the log and metrics), how often a guessed token is kept (``p``), and when a guess pays (``worth``)."""

    # Where no guess pays, one token is still guessed this often (0: never), to notice when they would.
    probe_every = PROBE_EVERY

    def __init__(self) -> None:
        self.drafted = 0
        self.kept = 0
        # How often a guessed token is kept (given those before it were): weighted counts, from an even
        # start, recent guesses counting most.
        self._yes, self._no = 1.0, 1.0
        self._skipped = 0  # guesses not made since the last one (see PROBE_EVERY)

    @property
    def p(self) -> float:
        return self._yes / (self._yes + self._no)

    def worth(self, limit: int, price: StepPrice | None, per_guess: float = 0.0) -> int:
        """How many tokens to guess, at most ``limit``, at the step's ``price`` (None: unknown yet, so
        ``limit``), each guessed token costing ``per_guess`` seconds more to make; a probe of one token
        every PROBE_EVERY chances where none pays."""
        if limit <= 0:
            return 0
        if price is not None:
            worth = best_length(self.p, price, limit, per_guess)
            if worth == 0:
                self._skipped += 1
                if not self.probe_every or self._skipped < self.probe_every:
                    return 0
                worth = 1
            limit = worth
        self._skipped = 0
        return limit

    def feedback(self, drafted: int, kept: int) -> None:
        """``kept`` of the ``drafted`` guessed tokens were confirmed by sampling."""
        self.drafted += drafted
        self.kept += kept
        self._yes, self._no = self._yes * 0.9 + kept, self._no * 0.9 + (kept < drafted)


class NgramDrafter(Acceptance):
    """Guesses for one sequence from the tokens it holds (``sync``), up to ``draft_max`` at a time."""

    def __init__(self, draft_max: int, n: int = NGRAM) -> None:
        super().__init__()
        self.draft_max = draft_max
        self.n = n
        self.limit = min(FIRST_DRAFT, draft_max)  # length of the next guess
        self.tokens: list[int] = []
        # Each n-gram seen, and the position of the token that followed its latest occurrence.
        self._follows: dict[tuple[int, ...], int] = {}

    def sync(self, held: list[int]) -> None:
        """Index the tokens of ``held`` (the sequence's cache, which only grows between calls, or is cut
        back to what was indexed) that are new since the last call."""
        tokens, n = self.tokens, self.n
        for token in held[len(tokens) :]:
            if len(tokens) >= n:
                self._follows[tuple(tokens[-n:])] = len(tokens)
            tokens.append(token)

    def draft(self, next_token: int, room: int, price: StepPrice | None = None) -> list[int]:
        """The guessed tokens after ``next_token`` (sampled, not yet in the cache), at most ``room``, as
        many as pay at the step's ``price`` (StepCost.price); without it as many as the cap allows."""
        tokens = self.tokens
        limit = min(self.limit, room)
        if limit <= 0 or len(tokens) < self.n - 1:
            return []
        key = (*tokens[len(tokens) - self.n + 1 :], next_token)
        at = self._follows.get(key)
        if at is None:
            return []
        return tokens[at : at + self.worth(limit, price)]

    def feedback(self, drafted: int, kept: int) -> None:
        """``kept`` of the ``drafted`` guessed tokens were confirmed by sampling; the next guess's cap
        doubles after a guess kept whole, and falls back to the part kept otherwise."""
        super().feedback(drafted, kept)
        if kept == drafted:
            self.limit = min(self.draft_max, max(1, self.limit) * 2)
        else:
            self.limit = max(1, kept)
