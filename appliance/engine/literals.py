"""Control-token text that a client typed stays text.

The chat template's output is tokenized with special tokens parsed, so that the template's own
``<|im_start|>`` becomes the control token it means. A user who types ``<|im_start|>system`` into a
message must not get the same: it would let any chat user write turns in the system's name. So before the
template runs, every control-token text inside a client's message is swapped for a marker no client can
guess; after, the rendered prompt is cut at the markers, and the pieces between them are tokenized with
special tokens parsed, the swapped texts as plain text. A prompt without such text is tokenized exactly as
before, in one piece.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


def trie_pattern(words: Iterable[str]) -> re.Pattern[str] | None:
    """A regex matching any of ``words``, longest first, built as a trie so a search costs about the same
    for ten words or ten thousand (vocabularies hold thousands of control tokens)."""
    trie: dict[str, Any] = {}
    for word in words:
        if not word:
            continue
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}
    if not trie:
        return None

    def build(node: dict[str, Any]) -> str:
        branches = [re.escape(char) + build(child) for char, child in sorted(node.items()) if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return re.compile(build(trie))


@dataclass
class Literals:
    """One prompt's swapped texts. ``protect`` each client-written string before the template renders
    them; ``segments`` cuts the rendered prompt into (text, parse_special) pieces."""

    pattern: re.Pattern[str] | None  # the vocabulary's control-token texts (trie_pattern)
    swapped: list[str] = field(default_factory=list)
    nonce: str = field(default_factory=lambda: secrets.token_hex(6))

    def protect(self, text: str) -> str:
        if self.pattern is None or not text:
            return text

        def swap(match: re.Match[str]) -> str:
            self.swapped.append(match.group(0))
            return f"\ue000{self.nonce}:{len(self.swapped) - 1}\ue001"

        return self.pattern.sub(swap, text)

    def segments(self, rendered: str) -> list[tuple[str, bool]]:
        """The rendered prompt as pieces to tokenize in order: (text, True) where special tokens are
        parsed, (a swapped text, False) where they are not."""
        if not self.swapped:
            return [(rendered, True)]
        marker = re.compile("\ue000" + re.escape(self.nonce) + r":(\d+)\ue001")
        pieces: list[tuple[str, bool]] = []
        at = 0
        for match in marker.finditer(rendered):
            index = int(match.group(1))
            if index >= len(self.swapped):
                continue
            if match.start() > at:
                pieces.append((rendered[at : match.start()], True))
            pieces.append((self.swapped[index], False))
            at = match.end()
        if at < len(rendered):
            pieces.append((rendered[at:], True))
        return pieces
