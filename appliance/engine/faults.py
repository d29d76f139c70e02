"""Fault injection for the fault tests, off unless the daemon starts with ``APPLIANCE_TEST_FAULTS=1``.

Nothing a client can send makes generation fail on demand (the one real trigger found, a JSON grammar
reaching its end while end-of-generation is banned, aborted the process and is fixed in
``llama.Sampler``), so the tests that prove a failure stays inside its request poison one request: with
injection on, a request whose prompt contains ``[[fault:POINT]]`` fails at POINT once it has streamed
``AFTER_TOKENS`` tokens (embeddings: at once):

- ``sample``: sampling the request's next token raises a Python exception (a bug in the sampler or the
  detokeniser: the per-request path);
- ``decode``: llama_decode fails for every batch holding the request's tokens (llama.cpp returning an
  error: the batch is retried one sequence at a time, so only this request fails);
- ``step``: the engine's step itself raises, before any request is at fault (the worker's safety net);
- ``embed``: computing the input's embedding raises.

The variable is read once, when a model's engine starts (the house rule that settings come only from
``Settings`` is kept for everything a user configures; this is not a setting).
"""

from __future__ import annotations

import os
import re
from typing import Any

from appliance.errors import EngineFailure

ENV = "APPLIANCE_TEST_FAULTS"
AFTER_TOKENS = 2
_MARKER = re.compile(rb"\[\[fault:(sample|decode|step|embed)\]\]")


class InjectedFault(RuntimeError):
    """Raised where a bug would raise; tests recognise it in the daemon's log."""


class Faults:
    """Which requests are poisoned, read from their prompts' text."""

    def __init__(self, model: Any) -> None:
        self._model = model

    @classmethod
    def from_environment(cls, model: Any) -> Faults | None:
        return cls(model) if os.environ.get(ENV) == "1" else None

    def point(self, tokens: list[int]) -> str | None:
        """The fault point a prompt asks for, if any."""
        match = _MARKER.search(b"".join(self._model.piece(t) for t in tokens))
        return match.group(1).decode() if match else None

    @staticmethod
    def check(point: str, armed: str | None, generated: int) -> None:
        """Raise at ``point`` for a request armed for it that has streamed enough tokens."""
        if armed != point or generated < AFTER_TOKENS:
            return
        if point == "decode":  # what LlamaModel.decode raises when llama_decode returns an error
            raise EngineFailure("llama_decode failed with code -1 (injected fault)")
        raise InjectedFault(f"injected fault at {point}")

    def check_embed(self, tokens: list[int]) -> None:
        if self.point(tokens) == "embed":
            raise InjectedFault("injected fault at embed")
