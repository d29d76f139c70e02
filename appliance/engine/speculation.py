"""Prompt-lookup speculative decoding (llama.cpp's n-gram drafting; "prompt lookup decoding"): the tokens
that followed the latest earlier occurrence of the newest n-gram, in the prompt or the reply so far, are
guessed to come next. One decode reads the sampled token and the guesses together; sampling at each
position in turn keeps the guesses that agree with what it samples there, and the first that does not
is replaced by the sampled token. Every kept token is sampled from the model's own distribution at its
position, so the output is the one plain decoding gives (at any temperature), only sooner when guesses
are kept: a reply that repeats its prompt (an edit of code, a quote, a summary with names) runs several
tokens a decode.

Guessing costs a little when the guess is wrong (a few more tokens in the decode), so the length of a
slot's next guess follows how its last ones fared: doubled while guesses are kept whole, back to the
part that was kept when one is refused.
"""

from __future__ import annotations

# The n-gram whose earlier occurrence is looked up: three tokens rarely repeat by chance in free text,
# and do in copied text (llama.cpp's prompt-lookup examples use 3 as well).
NGRAM = 3
FIRST_DRAFT = 4


class NgramDrafter:
    """Guesses for one sequence from the tokens it holds (``sync``), up to ``draft_max`` at a time."""

    def __init__(self, draft_max: int, n: int = NGRAM) -> None:
        self.draft_max = draft_max
        self.n = n
        self.limit = min(FIRST_DRAFT, draft_max)  # length of the next guess
        self.tokens: list[int] = []
        # Each n-gram seen, and the position of the token that followed its latest occurrence.
        self._follows: dict[tuple[int, ...], int] = {}
        self.drafted = 0  # tokens guessed, and kept, over the request (for the log and metrics)
        self.kept = 0

    def sync(self, held: list[int]) -> None:
        """Index the tokens of ``held`` (the sequence's cache, which only grows between calls, or is cut
        back to what was indexed) that are new since the last call."""
        tokens, n = self.tokens, self.n
        for token in held[len(tokens) :]:
            if len(tokens) >= n:
                self._follows[tuple(tokens[-n:])] = len(tokens)
            tokens.append(token)

    def draft(self, next_token: int, room: int) -> list[int]:
        """The guessed tokens after ``next_token`` (sampled, not yet in the cache), at most ``room``."""
        tokens = self.tokens
        limit = min(self.limit, room)
        if limit <= 0 or len(tokens) < self.n - 1:
            return []
        key = (*tokens[len(tokens) - self.n + 1 :], next_token)
        at = self._follows.get(key)
        if at is None:
            return []
        return tokens[at : at + limit]

    def feedback(self, drafted: int, kept: int) -> None:
        """``kept`` of the ``drafted`` guessed tokens were confirmed by sampling."""
        self.drafted += drafted
        self.kept += kept
        if kept == drafted:
            self.limit = min(self.draft_max, max(1, self.limit) * 2)
        else:
            self.limit = max(1, kept)
