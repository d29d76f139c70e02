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
keeps how far its recent lookups were right, whether it guessed them or not (``NgramDrafter.matched``,
``censored_reach``: a reply that starts to copy its prompt is seen at once, without probing), and a
guess is made only as long as the tokens the step is expected to bring per second beat plain decoding;
its length likewise. The length is also capped by how the last guesses fared: doubled while they are
kept whole, back to the part that was kept when one is refused.

A change of the step's size has its own cost. llama.cpp builds its graph anew, and its CUDA backend runs
a new graph's kernels one by one and captures a CUDA graph only at the second step of the same size: on
the H200 the default model's step takes 1.1-1.6 ms at a size held, 4.5-6 ms right after a change, 3.6 ms
the step after (the capture). A guess now and then between plain steps costs there about eight plain
steps. So the engine learns what steps take by their place in a run of one size (``StepCost``), and
where a change costs far more than a step at a held size (``StepPrice.holds_size``), a slot holds a
guess length (``HeldLength``): the same number of tokens step after step, padded where the lookup has
fewer, chosen from how many tokens its lookup would have had right at each recent step (checked against
what was generated, guessed or not, so no probe steps are needed to know it), and changed only once
holding it has lost as much time as the change costs.
"""

from __future__ import annotations

import bisect
import functools
import statistics
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

# The n-gram whose earlier occurrence is looked up: three tokens rarely repeat by chance in free text,
# and do in copied text (llama.cpp's prompt-lookup examples use 3 as well).
NGRAM = 3
FIRST_DRAFT = 4
# A guess is made only where the step is expected to bring this much more than plain decoding: where it
# brings about the same, it only makes tokens come in bursts (a slower step, then several at once).
MARGIN = 1.1
# Where lengths are held, the gain from which a better length counts as better: the loss of not changing
# to it must still add up to the change's cost (HeldLength).
HOLD_MARGIN = 1.02
# Where a step right after a size change costs more than this share of a step again (CUDA graphs), slots
# hold their guess length from step to step (HeldLength).
SWITCH_SHARE = 0.5
# The steps a length is expected to be held once changed to: a change whose cost, spread over them, still
# leaves a gain is made at once (a reply that starts to copy its prompt); others wait for the loss to
# add up (HeldLength).
HORIZON = 16
# The recent lookups whose outcome (tokens right) a slot weighs when choosing the length to hold.
OUTCOMES = 16
# Each lookup weighs this much less than the next one: a reply goes from copying to writing its own
# words and back within a few steps.
RECENCY = 0.8


class SizeTimes:
    """The seconds generation steps of each size (tokens decoded) took, as the engine timed them: for
    each size, the median (or another ``pick``) of its last few steps once there are ``TRUSTED`` of them
    (a size's first decode may be far slower: buffers grown, kernels loaded; and a one-off pause must not
    stop guesses of that size for good); between and beyond the sizes known, straight lines through the
    nearest two."""

    RECENT = 5  # steps of a size remembered
    TRUSTED = 3  # steps of a size before its time is used

    def __init__(self, pick: Callable[[Sequence[float]], float] = statistics.median) -> None:
        self._pick = pick  # of a size's last few steps, the time that stands for it
        self._steps: dict[int, deque[float]] = {}
        self._seconds: dict[int, float] = {}  # the sizes trusted, and their time (``pick`` of the last few)
        self._sizes: list[int] = []  # the same sizes, in order

    def add(self, tokens: int, seconds: float) -> None:
        steps = self._steps.setdefault(tokens, deque(maxlen=self.RECENT))
        steps.append(seconds)
        if len(steps) >= self.TRUSTED:
            if tokens not in self._seconds:
                bisect.insort(self._sizes, tokens)
            self._seconds[tokens] = self._pick(steps)

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

    @property
    def largest(self) -> int:
        """The largest size trusted (0: none)."""
        return self._sizes[-1] if self._sizes else 0

    def exact(self, tokens: int) -> float | None:
        """The time of ``tokens`` where that size is trusted, else None."""
        return self._seconds.get(tokens)

    def brackets(self, tokens: int) -> bool:
        """Whether sizes are trusted on both sides of ``tokens``."""
        return bool(self._sizes) and self._sizes[0] < tokens < self._sizes[-1]


class StepCost:
    """What a generation step takes by its size, learned from the engine's own steps (only steps that read
    no prompt), in three tables (``SizeTimes``) by the step's place in its run of steps of one size: right
    after a size change (``run`` 1), the step after that (2: llama.cpp's CUDA backend runs a new shape's
    kernels one by one and captures its CUDA graph only at the second step of that shape, which is slow
    too), and the steps after those (a size held: the graph replayed)."""

    RECENT = SizeTimes.RECENT
    TRUSTED = SizeTimes.TRUSTED
    HELD = 3  # a step's place in its run from which its size counts as held

    def __init__(self) -> None:
        self._held = SizeTimes()
        self._changed = SizeTimes()
        self._second = SizeTimes()
        # All three, each size's fastest step: where none knows a size yet (guesses of every length at
        # first). Hopeful, so that a length is tried long enough for its held steps to be measured.
        self._all = SizeTimes(pick=min)
        self._adds = 0
        self._costly = (-1, False)  # changes_cost() and the adds it was read at: read again every 8

    def clock(self, tokens: int, seconds: float, run: int = HELD) -> float:
        """The seconds to count for a step of ``tokens`` that took ``seconds`` here as the ``run``-th of
        its size in a row: those (a benchmark that replays another machine's times charges its own)."""
        return seconds

    def add(self, tokens: int, seconds: float, run: int = HELD) -> None:
        """A step of ``tokens`` took ``seconds``; ``run``: the steps of that size in a row, this one
        included (1: the step before had another size)."""
        table = self._changed if run <= 1 else self._second if run == 2 else self._held
        table.add(tokens, seconds)
        self._all.add(tokens, seconds)
        self._adds += 1

    def table(self) -> dict[int, float]:
        """Each size trusted so far at a held size, and its seconds, smallest first."""
        return self._held.table()

    def changed_table(self) -> dict[int, float]:
        """The same, for steps right after a size change."""
        return self._changed.table()

    def seconds(self, tokens: int) -> float | None:
        """What a step of ``tokens`` takes at a held size: as measured, or read between the sizes measured
        on either side; else, where the second steps of a run or the steps right after a change know it
        and a size measured both ways, scaled from that one (a size seldom held long: on a GPU a guess
        length is first seen right after a change); else from all steps alike; None while unknown."""
        held = self._held
        known = held.exact(tokens)
        if known is not None:
            return known
        if held.brackets(tokens):
            return held.seconds(tokens)
        for table in (self._second, self._changed):
            scaled = self._scaled(table, tokens)
            if scaled is not None:
                return scaled
        return self._all.seconds(tokens)

    def _scaled(self, table: SizeTimes, tokens: int) -> float | None:
        other = table.seconds(tokens)
        held = self._held.table()
        if other is None or not held:
            return None
        near = min(held, key=lambda n: abs(n - tokens))
        after = table.seconds(near)
        return held[near] * other / after if after else None

    def after_change(self, tokens: int) -> float | None:
        """What a step of ``tokens`` takes right after a step of another size, with what the step after it
        takes more than at a held size (the CUDA graph's capture; where the second steps know no size
        near, the extra of the one they know); None while unknown."""
        first = self._changed.seconds(tokens)
        held = self.seconds(tokens)
        if first is None or held is None:
            return None
        return first + self._capture(tokens, held)

    def _capture(self, tokens: int, held: float) -> float:
        second = self._second.seconds(tokens)
        if second is not None:
            return max(second - held, 0.0)
        seconds, held_times = self._second.table(), self._held.table()
        both = seconds.keys() & held_times.keys()
        if not both:
            return 0.0
        near = min(both, key=lambda n: abs(n - tokens))
        return max(seconds[near] - held_times[near], 0.0)

    def price(self, base: int, last: int = 0) -> StepPrice | None:
        """What guesses cost in a step that holds ``base`` tokens without them, after a step of ``last``
        tokens; None while unknown."""
        if self.seconds(base) is None or self.seconds(base + 1) is None:
            return None
        # Each size read once a step, whatever the slots and lengths weighed (tables change between steps).
        seconds = functools.cache(lambda n: self.seconds(n) or 0.0)
        after = functools.cache(self.after_change)
        return StepPrice(base, seconds, last, self._held.largest, after, self.costly())

    def costly(self) -> bool:
        """``changes_cost()``, read again every 8 steps learned (a step's few microseconds count beside a
        GPU's 1 ms)."""
        if self._adds - self._costly[0] >= 8:
            self._costly = (self._adds, self.changes_cost())
        return self._costly[1]

    def changes_cost(self) -> bool:
        """Whether a size change (its first step and the second's extra) takes more than ``SWITCH_SHARE``
        of a step longer than one at a held size, by the median over the sizes measured after changes (CUDA
        graphs; on a CPU the graph built again costs a few percent, and one size caught by a pause does
        not decide)."""
        shares = []
        for n in self._changed.table():
            held, after = self.seconds(n), self.after_change(n)
            if held and after:
                shares.append(after / held - 1)
        return bool(shares) and statistics.median(shares) > SWITCH_SHARE


@dataclass(frozen=True)
class StepPrice:
    """A step about to be decoded: ``base`` tokens in it already (each generating slot's next token,
    and the guesses of the slots before), and ``seconds(n)``, what a step of n tokens takes."""

    base: int
    seconds: Callable[[int], float]
    last: int = 0  # tokens in the step before (0: none known)
    held_up_to: int = 0  # the largest size whose time at a held size is measured (0: none)
    # What a step of n tokens takes right after one of another size, with the capture's extra at the step
    # after (StepCost.after_change); None where unknown.
    after_change: Callable[[int], float | None] = lambda _n: None
    # Whether a size change costs here much more than the step itself (StepCost.changes_cost): then
    # guess lengths are held from step to step (HeldLength).
    holds_size: bool = False
    # The streams the step generates for (0: ``base``, a step with no guesses in it yet).
    streams: int = 0

    def plus(self, tokens: int) -> StepPrice:
        """The step after ``tokens`` more (guesses) were put in it."""
        return replace(self, base=self.base + tokens, streams=self.streams or self.base)

    def switch(self, tokens: int) -> float:
        """The seconds a change to a step of ``tokens`` costs more than a step held (its first step and
        the capture's extra; 0 where unknown)."""
        after = self.after_change(tokens)
        return max(after - self.seconds(tokens), 0.0) if after is not None else 0.0


def best_length(p: float, price: StepPrice, most: int, per_guess: float = 0.0) -> int:
    """The guess length (0 to ``most``) that brings the step the most tokens per second when each guessed
    token is kept with probability ``p`` (given the ones before it were): ``best_reach`` where the first
    k are all kept with chance p^k."""
    return best_reach([p**k for k in range(most + 1)], price, per_guess)


def best_reach(reach: Sequence[float], price: StepPrice, per_guess: float = 0.0) -> int:
    """The guess length (0 to ``len(reach) - 1``) that brings the step the most tokens per second, where
    ``reach[k]`` is the chance that a guess's first k tokens are all kept: k guesses make the step
    ``price.seconds(base + k)`` long, plus k * ``per_guess`` for making them (a draft model's decodes; 0
    for prompt lookup), and bring 1 + reach[1] + ... + reach[k] tokens where plain decoding brings 1. 0
    unless some length beats the step without it by ``MARGIN`` of a token for each stream the step
    generates for: a slot's guesses make the step of every stream beside it longer. (Asking that margin
    of this slot's one token only let each of 4 streams on this CPU guess where together they brought
    less: in an edit at 4 streams the books judged the guesses at 0.73x of plain decoding, 0.91x with
    this.) Guesses of slots before this one in the step are in ``base``, counted as kept."""
    base = price.base
    best, best_rate = 0, (base + (MARGIN - 1) * (price.streams or base)) / price.seconds(base)
    expected = 1.0
    for k in range(1, len(reach)):
        expected += reach[k]
        rate = (base - 1 + expected) / (price.seconds(base + k) + k * per_guess)
        if rate > best_rate:
            best, best_rate = k, rate
    return best


def reach_of(outcomes: Sequence[int], most: int) -> list[float] | None:
    """From how many guessed tokens would have been right at each of a slot's recent steps (``outcomes``,
    oldest first, each weighing ``RECENCY`` times the next), the chance that a guess's first k tokens
    are all right, for k from 0 to ``most``; None where nothing is known yet."""
    if not outcomes:
        return None
    at_least = [0.0] * (most + 2)  # at_least[k]: the weight of outcomes with k or more tokens right
    weight = 1.0
    for right in reversed(outcomes):
        at_least[min(right, most + 1)] += weight
        weight *= RECENCY
    total = sum(at_least)
    for k in range(most, -1, -1):
        at_least[k] += at_least[k + 1]
    return [w / total for w in at_least[: most + 1]]


def censored_reach(lookups: Sequence[tuple[int, bool]], most: int) -> list[float] | None:
    """The chance that a guess's first k tokens are all right, for k from 0 to ``most``, from recent
    lookups that found tokens (``lookups``, oldest first, each weighing ``RECENCY`` times the next): how
    many of a lookup's tokens were right, and whether that is only a lower bound (a lookup still being
    checked, or one whose tokens were all right). The product-limit (Kaplan-Meier) estimate: the chance
    that token k is right where the k - 1 before it were, among the lookups that reached k - 1 and whose
    k-th token is known. Counting a lookup still checked as right only so far would take every reply
    that copies its prompt to stop copying soon (its newest lookup always 0 right so far); beyond what
    any lookup shows, the chance stays that of the last token known (the guess's cap bounds how far that
    reaches). None where nothing is known yet."""
    if not lookups:
        return None
    # One pass (this runs for every guessing slot at every step): by the tokens right (past ``most``
    # counted as ``most`` + 1), the weight of the lookups, and of those known wrong at the next token.
    right_at = [0.0] * (most + 2)
    wrong_after = [0.0] * (most + 1)
    weight = 1.0
    for right, bound in reversed(lookups):
        right_at[min(right, most + 1)] += weight
        if not bound and right <= most:
            wrong_after[right] += weight
        weight *= RECENCY
    at_least = right_at[:]  # at_least[k]: the weight of lookups with k or more tokens right
    for k in range(most, -1, -1):
        at_least[k] += at_least[k + 1]
    reach = [1.0]
    for k in range(1, most + 1):
        known = at_least[k] + wrong_after[k - 1]
        reach.append(reach[-1] * at_least[k] / known if known else reach[-1])
    return reach


def held_steps(reach: Sequence[float], price: StepPrice, per_guess: float = 0.0) -> list[tuple[float, float]]:
    """For each guess length k (0 to ``len(reach) - 1``), where ``reach[k]`` is the chance that a guess's
    first k tokens are all kept (``reach[0]`` is 1), the tokens a step at that length held brings (this
    slot's 1 + reach[1] + ... + reach[k], and one for each other token of the ``base``) and its seconds
    (``price.seconds`` of its size, plus k * ``per_guess`` for making the guesses: a draft model's
    decodes). A size larger than any measured held is taken to cost what the largest did (the caller
    bounds how far past it a length reaches): its step is then measured."""
    steps, expected = [], 1.0
    for k, chance in enumerate(reach):
        if k:
            expected += chance
        n = price.base + k
        seconds = price.seconds(min(n, price.held_up_to) if price.held_up_to else n) + k * per_guess
        steps.append((price.base - 1 + expected, seconds))
    return steps


class HeldLength:
    """The guess length a slot holds from step to step where a size change costs much
    (``StepPrice.holds_size``), changed as in ski rental: while another length would bring more tokens
    a second (by ``HOLD_MARGIN``), the time the held one loses against it adds up step by step, and the
    change is made once that loss reaches what the change costs (``StepPrice.switch``: its first step
    and the CUDA graph's capture). A change made for a gain that lasts a step or two is paid for twice
    (there and back), and a length held through a loss that lasts pays at every step; this way neither
    costs more than about twice what the lengths best in hindsight would have."""

    def __init__(self) -> None:
        self.length = 0
        self.lost = 0.0  # seconds lost to a better length since the one held stopped being the best

    def choose(self, reach: Sequence[float], price: StepPrice, per_guess: float = 0.0) -> int:
        """The length to guess now, 0 to ``len(reach) - 1`` (which bounds the one held too): the one held
        unless the loss against a better one has reached a change's cost (``held_steps`` prices each)."""
        steps = held_steps(reach, price, per_guess)
        rate = [tokens / seconds for tokens, seconds in steps]
        current = min(self.length, len(steps) - 1)
        best = max(range(len(steps)), key=rate.__getitem__)
        if rate[best] <= rate[current] * HOLD_MARGIN:
            self.lost = 0.0
        else:
            tokens, seconds = steps[current]
            self.lost += seconds - tokens / rate[best]
            switch = price.switch(price.base + best)
            gained, taken = steps[best]
            if self.lost >= switch or gained / (taken + switch / HORIZON) > rate[current] * HOLD_MARGIN:
                current, self.lost = best, 0.0
        self.length = current
        return current


def hold_most(price: StepPrice, room: int, draft_max: int, held: int) -> int:
    """The longest guess a slot that holds its length (``held``) may choose now, at most ``room`` and
    ``draft_max``: up to twice the largest size measured held (a size not yet measured is estimated, and
    past 8 rows a GPU's step doubles). 0 where ``room`` is shorter than the length held: the reply's last
    tokens go plain (one change back to plain steps costs less than a change at each step)."""
    if room < max(held, 1):
        return 0
    return min(draft_max, room, max(2 * price.held_up_to - price.base, 1))


class Acceptance:
    """What a slot's guesses, of any source, have brought: tokens guessed and kept over the request (for
    the log and metrics), how often a guessed token is kept (``p``), and when a guess pays (``worth``)."""

    def __init__(self) -> None:
        self.drafted = 0
        self.kept = 0
        # How often a guessed token is kept (given those before it were): weighted counts, from an even
        # start, recent guesses counting most.
        self._yes, self._no = 1.0, 1.0

    @property
    def p(self) -> float:
        return self._yes / (self._yes + self._no)

    def worth(
        self,
        limit: int,
        price: StepPrice | None,
        per_guess: float = 0.0,
        reach: Sequence[float] | None = None,
    ) -> int:
        """How many tokens to guess, at most ``limit``, at the step's ``price``, each guessed token costing
        ``per_guess`` seconds more to make, each kept with chance ``p`` (given those before it were), or
        as ``reach`` says where it is given (``reach[k]``: the chance that a guess's first k tokens are
        all kept; prompt lookup reads it from what its recent lookups had right, guessed or not, so it
        needs no probe guesses to see a reply start to copy its prompt). While the price is unknown
        (None), ``FIRST_DRAFT`` at most: guesses of one length make steps of one size, whose time is
        known after a few of them (StepCost.TRUSTED); lengths doubling from step to step would each be
        a new size to learn, and on a GPU each size change is slow."""
        if limit <= 0:
            return 0
        if price is None:
            return min(limit, FIRST_DRAFT)
        if reach is not None:
            return best_reach(reach[: limit + 1], price, per_guess)
        return best_length(self.p, price, limit, per_guess)

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
        # Where size changes are costly (StepPrice.holds_size): the guess length held, and how many tokens
        # each recent lookup had right.
        self.hold = HeldLength()
        self.outcomes: deque[int] = deque(maxlen=OUTCOMES)
        # The recent lookups that found tokens, checked: how many were right, and whether they all were
        # (then more might have been: censored_reach). Where size changes cost little, each step's guess
        # length is chosen from them.
        self.matched: deque[tuple[int, bool]] = deque(maxlen=OUTCOMES)
        self._open: list[list[Any]] = []  # lookups being checked: [position, tokens, right so far]

    def sync(self, held: list[int]) -> None:
        """Index the tokens of ``held`` (the sequence's cache, which only grows between calls, or is cut
        back to what was indexed) that are new since the last call, and check the open lookups
        against them."""
        tokens, n = self.tokens, self.n
        for token in held[len(tokens) :]:
            if len(tokens) >= n:
                self._follows[tuple(tokens[-n:])] = len(tokens)
            tokens.append(token)
        still = []
        for lookup in self._open:
            at, guess, right = lookup
            while right < len(guess) and at + right < len(tokens) and tokens[at + right] == guess[right]:
                right += 1
            if right == len(guess) or at + right < len(tokens):  # all right, or a wrong one reached
                self.outcomes.append(right)
                self.matched.append((right, right == len(guess)))
            else:
                lookup[2] = right
                still.append(lookup)
        self._open = still

    def occurrence(self, next_token: int) -> int | None:
        """Where the token after the latest earlier occurrence of the n-gram ending in ``next_token`` is
        (None: it never occurred)."""
        tokens = self.tokens
        if len(tokens) < self.n - 1:
            return None
        return self._follows.get((*tokens[len(tokens) - self.n + 1 :], next_token))

    def lookup(self, next_token: int) -> list[int]:
        """What followed the latest earlier occurrence of the n-gram ending in ``next_token`` (up to
        ``draft_max`` tokens; none where it never occurred), remembered to be checked against what is
        generated next (``outcomes``)."""
        tokens, at = self.tokens, self.occurrence(next_token)
        if at is None:
            self.outcomes.append(0)
            return []
        found = tokens[at : at + self.draft_max]
        self._open.append([len(tokens) + 1, found, 0])  # next_token goes at len(tokens)
        return found

    def draft(self, next_token: int, room: int, price: StepPrice | None = None) -> list[int]:
        """The guessed tokens after ``next_token`` (sampled, not yet in the cache), at most ``room``, as
        many as pay at the step's ``price`` (StepCost.price), judged by how far recent lookups that found
        tokens were right (``matched``, and those still being checked: ``censored_reach``); without a
        price as many as the cap allows. Where size changes are costly, the length held (``HeldLength``),
        padded with the lookup's last token (or ``next_token``) where it found fewer, within
        ``hold_most``."""
        found = self.lookup(next_token)
        if price is not None and price.holds_size:
            most = hold_most(price, room, self.draft_max, self.hold.length)
            if most == 0:
                return []
            seen = [*self.outcomes, *(right for _, _, right in self._open)]  # open: right so far
            reach = reach_of(seen, most) if self.hold.length or any(seen) else None
            # Nothing known yet, or no lookup right of late while plain (free text: every step).
            k = self.hold.choose(reach, price) if reach is not None else min(self.hold.length, most)
            return found[:k] + [found[-1] if found else next_token] * (k - len(found[:k]))
        limit = min(self.limit, room, len(found))
        if limit <= 0:
            return []
        # The lookups being checked, but not this one (the last opened): none of it is known yet.
        checked = [*self.matched, *((right, True) for _, _, right in self._open[:-1])]
        return found[: self.worth(limit, price, reach=censored_reach(checked, limit))]

    def feedback(self, drafted: int, kept: int) -> None:
        """``kept`` of the ``drafted`` guessed tokens were confirmed by sampling; the next guess's cap
        doubles after a guess kept whole, and falls back to the part kept otherwise."""
        super().feedback(drafted, kept)
        if kept == drafted:
            self.limit = min(self.draft_max, max(1, self.limit) * 2)
        else:
            self.limit = max(1, kept)
