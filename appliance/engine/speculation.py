"""Prompt-lookup speculative decoding (llama.cpp's n-gram drafting; "prompt lookup decoding"): the tokens
that followed the latest earlier occurrence of the newest n-gram, in the prompt or the reply so far, are
guessed to come next. One decode reads the sampled token and the guesses together; sampling at each
position in turn keeps the guesses that agree with what it samples there, and the first that does not
is replaced by the sampled token. Every kept token is sampled from the model's own distribution at its
position, so the output is the one plain decoding gives (at any temperature), only sooner when guesses
are kept: a reply that repeats its prompt (an edit of code, a quote, a summary with names) runs several
tokens a decode.

Whether a guess pays depends on the machine: a GPU reads k more tokens in one decode for about the
price of one, while a small CPU pays for each (on a 2-core x86 VM, 17 tokens took 13 times one). So the
engine fits what its own generation steps take, fixed + tokens x per_token (``StepCost``), each slot
keeps how often its guesses are kept (``NgramDrafter.p``), and a guess is made only as long as the
tokens it is expected to bring per second of decoding beat one token a step; its length likewise. The
length is also capped by how the last guesses fared: doubled while they are kept whole, back to the part
that was kept when one is refused.
"""

from __future__ import annotations

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
    """The seconds a generation step takes as ``fixed + tokens * per_token``, fitted by exponentially
    weighted least squares over the engine's recent steps (only steps that read no prompt)."""

    def __init__(self, decay: float = 0.97) -> None:
        self.decay = decay
        self._n = self._x = self._y = self._xx = self._xy = 0.0

    def add(self, tokens: int, seconds: float) -> None:
        d = self.decay
        self._n = self._n * d + 1
        self._x = self._x * d + tokens
        self._y = self._y * d + seconds
        self._xx = self._xx * d + tokens * tokens
        self._xy = self._xy * d + tokens * seconds

    def fit(self) -> tuple[float, float] | None:
        """(fixed, per_token) seconds, once steps of different sizes were seen; None before."""
        n = self._n
        if n < 4:
            return None
        mx, my = self._x / n, self._y / n
        var = self._xx / n - mx * mx
        if var < 0.25:  # all steps the same size: the split between fixed and per token is unknown
            return None
        per_token = max((self._xy / n - mx * my) / var, 1e-6)
        return max(my - per_token * mx, 0.0), per_token


def best_length(p: float, fixed: float, per_token: float, most: int, per_guess: float = 0.0) -> int:
    """The guess length (0 to ``most``) that brings the most tokens per second when each guessed token
    is kept with probability ``p`` (given the ones before it were): a step of 1 + k tokens costs
    fixed + (1 + k) * per_token, plus k * ``per_guess`` for making the guesses (a draft model's decodes;
    0 for prompt lookup), and brings 1 + p + p^2 + ... + p^k tokens. 0 unless some length beats plain
    decoding by ``MARGIN``."""
    best, best_rate = 0, MARGIN / (fixed + per_token)
    expected, term = 1.0, 1.0
    for k in range(1, most + 1):
        term *= p
        expected += term
        rate = expected / (fixed + (1 + k) * per_token + k * per_guess)
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

    def worth(self, limit: int, cost: tuple[float, float] | None, per_guess: float = 0.0) -> int:
        """How many tokens to guess, at most ``limit``, at the step's ``cost`` (None: unknown yet, so
        ``limit``), each guessed token costing ``per_guess`` seconds more to make; a probe of one token
        every PROBE_EVERY chances where none pays."""
        if limit <= 0:
            return 0
        if cost is not None:
            worth = best_length(self.p, cost[0], cost[1], limit, per_guess)
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

    def draft(self, next_token: int, room: int, cost: tuple[float, float] | None = None) -> list[int]:
        """The guessed tokens after ``next_token`` (sampled, not yet in the cache), at most ``room``.
        ``cost`` is the step's (fixed, per_token) seconds (StepCost.fit, the fixed part shared with the
        step's other slots); without it the guess is as long as the cap allows."""
        tokens = self.tokens
        limit = min(self.limit, room)
        if limit <= 0 or len(tokens) < self.n - 1:
            return []
        key = (*tokens[len(tokens) - self.n + 1 :], next_token)
        at = self._follows.get(key)
        if at is None:
            return []
        return tokens[at : at + self.worth(limit, cost)]

    def feedback(self, drafted: int, kept: int) -> None:
        """``kept`` of the ``drafted`` guessed tokens were confirmed by sampling; the next guess's cap
        doubles after a guess kept whole, and falls back to the part kept otherwise."""
        super().feedback(drafted, kept)
        if kept == drafted:
            self.limit = min(self.draft_max, max(1, self.limit) * 2)
        else:
            self.limit = max(1, kept)
