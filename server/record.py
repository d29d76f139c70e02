"""The record of one API request: what the daemon learns about it on its way (the model asked for and
the one that served it, the backend and why, its timings and tokens, how it ended), kept in the ASGI
scope's state under one key and read once at the end, for the request's metrics, its log line and its
X-Appliance-* headers. Every part that learns something writes it here, typed; nothing else travels
between the middlewares and the routes."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.types import Scope

_KEY = "appliance.record"
_LOGGED_TEXT_CHARS = 4000  # of a prompt or reply, with server.log_prompts

Kind = Literal["generation", "embedding", "refused"]


@dataclass
class RequestRecord:
    """One request, as its log line and its metrics tell it. Times are ``time.monotonic()`` readings."""

    endpoint: str = ""
    started_s: float = field(default_factory=time.monotonic)
    asked_model: str | None = None
    """The model the body named (kept for the log line of a request refused before it was served)."""
    model: str = ""
    """The model that served it, as named here."""
    backend: str = "local"
    """"local" or "remote:NAME"."""
    reason: str | None = None
    """Why it went to a remote (capability, context, load, explicit)."""
    kind: Kind = "refused"
    load_s: float = 0.0
    """How long it waited for its local model to be ready (a load, a reload for its context, or the wait
    for another request's load): Ollama's load_duration."""
    first_token_s: float | None = None
    last_token_s: float | None = None
    prompt_tokens: int | None = None
    cached_tokens: int = 0
    generated_tokens: int | None = None
    status: str = "error"
    """"ok", "error" (failed after its 200), "cancelled" (the client left), or a refusal's HTTP status."""
    logged: bool = False
    stream_failed: bool = False
    """The answer failed after its 200 was sent: counted as "error"."""
    client_gone: bool = False
    """The client left before its answer began: counted as 499, as nginx says."""
    request_text: str | None = None
    reply_text: str | None = None
    """Kept only with server.log_prompts: prompts and replies stay out of logs otherwise."""

    def serve(self, endpoint: str, model: str, backend: str = "local", reason: str | None = None) -> None:
        """Who serves the request: the model (as named here), "local" or "remote:NAME", and why."""
        self.endpoint = endpoint
        self.model = model
        self.backend = backend
        self.reason = reason

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_s is None else self.first_token_s - self.started_s

    @property
    def tokens_per_s(self) -> float | None:
        """Generation speed after the first token (None with fewer than two tokens)."""
        first, last, generated = self.first_token_s, self.last_token_s, self.generated_tokens
        if first is None or last is None or not generated or generated < 2 or last <= first:
            return None
        return (generated - 1) / (last - first)

    def fields(self) -> dict[str, Any]:
        """The request's log line: who served it, its tokens and timings (as far as its kind has them),
        how it ended and how long it took; a remote request's line names its reason."""
        line: dict[str, Any] = {"endpoint": self.endpoint, "model": self.model or self.asked_model or "",
                                "backend": self.backend}  # fmt: skip
        if self.backend != "local":
            line["reason"] = self.reason
        if self.kind != "refused":
            line["prompt_tokens"] = self.prompt_tokens
        if self.kind == "generation":
            speed = self.tokens_per_s
            line["generated_tokens"] = self.generated_tokens
            line["ttft_ms"] = None if self.ttft_s is None else round(1000 * self.ttft_s)
            line["tokens_per_s"] = None if speed is None else round(speed, 1)
        line["status"] = self.status
        line["duration_s"] = round(time.monotonic() - self.started_s, 2)
        for name, text in (("request", self.request_text), ("reply", self.reply_text)):
            if text is not None:  # quoted: the line stays one line
                line[name] = json.dumps(text[:_LOGGED_TEXT_CHARS])
        return line


def record_of(scope: Scope) -> RequestRecord:
    """The record of the request in ``scope``, begun here if nothing has begun it yet."""
    state = scope.setdefault("state", {})
    record = state.get(_KEY)
    if record is None:
        record = state[_KEY] = RequestRecord(endpoint=scope.get("path", ""))
    assert isinstance(record, RequestRecord)
    return record
