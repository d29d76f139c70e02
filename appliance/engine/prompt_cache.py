"""Prompts kept in host memory: the KV cache of a conversation whose slot another request takes.

A slot keeps the KV of its last request for the next one with the same prefix, but with more
conversations than slots (an agent and an IDE, two users) each new request pushes another
conversation's prefix out. Before a slot gives up a prefix, its state (llama_state_seq_get_data) goes
here; a request that shares more with a kept prefix than with any slot gets that state copied back into
its slot, and reads only the rest of its prompt. llama-server does the same with `--cache-ram`.

Bounded in bytes, least recently used first out; a prefix that another kept one starts with is dropped
(the longer one serves both).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from appliance.engine.tokens import common_prefix


@dataclass
class Kept:
    tokens: list[int]
    state: Any  # bytes-like: the sequence state, len() of it its size


class PromptCache:
    """Sequence states by the tokens they hold, at most ``limit_bytes`` of them."""

    def __init__(self, limit_bytes: int, min_tokens: int = 64, room: Callable[[], int] | None = None) -> None:
        self.limit_bytes = limit_bytes
        self.min_tokens = min_tokens  # shorter prefixes are read again faster than they are copied
        # Bytes the machine can still give (its available memory less a floor), read before each copy:
        # the planner does not count the cache, so it only grows into memory nothing else needs.
        self.room = room
        self._kept: list[Kept] = []  # least recently used first
        self.size = 0  # bytes held
        self.hits = 0
        self.tokens_restored = 0

    def __len__(self) -> int:
        return len(self._kept)

    def wants(self, tokens: list[int], state_size: int) -> bool:
        """Whether a prefix of ``tokens`` (``state_size`` bytes) is worth keeping: long enough, within the
        bound, and not held already (by a kept prefix at least as long that starts with it)."""
        if len(tokens) < self.min_tokens or state_size > self.limit_bytes:
            return False
        if self.room is not None and state_size > self.room():
            return False
        return not any(
            len(k.tokens) >= len(tokens) and common_prefix(k.tokens, tokens) == len(tokens)
            for k in self._kept
        )

    def put(self, tokens: list[int], state: Any) -> None:
        """Keep ``state``, the sequence state holding ``tokens``; what it covers, and the least recently
        used beyond the bound, leave."""
        n = len(tokens)
        self._drop(
            [k for k in self._kept if len(k.tokens) <= n and common_prefix(k.tokens, tokens) == len(k.tokens)]
        )
        self._kept.append(Kept(list(tokens), state))
        self.size += len(state)
        while self.size > self.limit_bytes and self._kept:
            self._drop([self._kept[0]])

    def best(self, prompt: list[int]) -> tuple[Kept | None, int]:
        """The kept prefix sharing the most tokens with ``prompt``, and how many (0: none shares any)."""
        best, most = None, 0
        for kept in self._kept:
            n = common_prefix(kept.tokens, prompt)
            if n > most:
                best, most = kept, n
        return best, most

    def used(self, kept: Kept, tokens: int) -> None:
        """``kept`` was copied back into a slot to save reading ``tokens`` tokens: most recently used."""
        self._kept.remove(kept)
        self._kept.append(kept)
        self.hits += 1
        self.tokens_restored += tokens

    def _drop(self, gone: list[Kept]) -> None:
        for kept in gone:
            self._kept.remove(kept)
            self.size -= len(kept.state)
