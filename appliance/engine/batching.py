"""Continuous batching: N slots share one llama.cpp context; every step decodes one batch holding the
next token of each generating slot and chunks of the prompts being read, so a long prompt never
freezes the other streams and a new request joins between two steps.

Driven by one thread (the backend's worker), which owns the model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from appliance.backend import Finished, TextDelta, TokenLogprob, Usage
from appliance.engine import tools as toolfmt
from appliance.engine.jobs import DONE, GenerationJob
from appliance.engine.params import GeneratedToken
from appliance.engine.text import StopScanner
from appliance.errors import ApplianceError, EngineFailure

log = logging.getLogger(__name__)


def token_logprob(model: Any, step: GeneratedToken) -> TokenLogprob:
    def entry(token: int) -> tuple[str, bytes]:
        data = model.piece(token) or model.token_text(token).encode("utf-8")
        return data.decode("utf-8", "replace"), data

    text, data = entry(step.token)
    top = tuple((*entry(t), lp) for t, lp in step.top_logprobs)
    return TokenLogprob(text, data, step.logprob if step.logprob is not None else 0.0, top)


class Slot:
    """One sequence of the shared context, serving one request at a time."""

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.job: GenerationJob | None = None
        self._sampler: Any = None

    def start(self, model: Any, job: GenerationJob) -> None:
        self._sampler = model.new_sampler(job.sampling)  # raises InvalidRequest for a bad grammar
        self.job = job
        self.started_at = time.monotonic()
        self.reused = model.reuse_prefix(self.seq, job.prompt)
        self.pending = job.prompt[self.reused :]
        self.next_token: int | None = None
        self.generated = 0
        self.scanner = StopScanner(job.stop)
        self.logprobs: list[TokenLogprob] = []
        self.buffered: list[str] = []
        if job.prefix_text:
            job.stream.emit(TextDelta(job.prefix_text))

    def on_token(self, model: Any, step: GeneratedToken) -> None:
        """Handle a sampled token; the slot finishes or keeps ``next_token`` for the next step."""
        job = self.job
        assert job is not None
        self.generated += 1
        if job.top_logprobs is not None:
            self.logprobs.append(token_logprob(model, step))
        if model.is_end_of_generation(step.token):
            self.finish(model, "stop")
            return
        text = self.scanner.feed(model.piece(step.token))
        if job.tool_mode:
            self.buffered.append(text)
        elif text or self.logprobs:
            job.stream.emit(TextDelta(text, tuple(self.logprobs)))
            self.logprobs = []
        if self.scanner.stopped:
            self.finish(model, "stop")
        elif self.generated >= job.max_tokens:
            self.finish(model, "length")
        else:
            self.next_token = step.token

    def finish(self, model: Any, reason: str) -> None:
        job = self.job
        assert job is not None
        rest = self.scanner.flush()
        usage = Usage(len(job.prompt), self.generated, self.reused)
        stream = job.stream
        if job.tool_mode:
            reply = toolfmt.parse_reply("".join(self.buffered) + rest)
            if reply.content:
                stream.emit(TextDelta(reply.content))
            if reply.tool_calls:
                stream.emit(Finished("tool_calls", usage, reply.tool_calls))
            else:
                stream.emit(Finished("stop" if reason == "stop" else "length", usage))
        else:
            if rest or self.logprobs:
                stream.emit(TextDelta(rest, tuple(self.logprobs)))
            stream.emit(Finished("stop" if reason == "stop" else "length", usage))
        self.release(model)

    def fail(self, model: Any, error: ApplianceError) -> None:
        assert self.job is not None
        self.job.stream.emit(error)
        self.release(model)

    def release(self, model: Any) -> None:
        """Free the slot; its KV cache stays for a next request with the same prefix."""
        if self.job is not None:
            self.job.stream.emit(DONE)
        if self._sampler is not None:
            model.free_sampler(self._sampler)
            self._sampler = None
        self.job = None


class BatchingEngine:
    def __init__(self, model: Any, on_request_done: Callable[[float], None] = lambda _s: None) -> None:
        self.model = model
        self.slots = [Slot(seq) for seq in range(model.n_seq)]
        self.n_batch = model.options.n_batch
        self._on_request_done = on_request_done  # seconds a request held its slot (for Retry-After)

    @property
    def active(self) -> int:
        return sum(1 for s in self.slots if s.job is not None)

    def has_free_slot(self) -> bool:
        return any(s.job is None for s in self.slots)

    def start(self, job: GenerationJob) -> None:
        """Put ``job`` in the idle slot whose cached prefix it shares most (prefix reuse)."""
        idle = [s for s in self.slots if s.job is None]

        def shared(slot: Slot) -> int:
            n = 0
            for old, new in zip(self.model.cached_tokens(slot.seq), job.prompt, strict=False):
                if old != new:
                    break
                n += 1
            return n

        slot = max(idle, key=shared)
        try:
            slot.start(self.model, job)
        except ApplianceError as exc:
            job.stream.emit(exc)
            job.stream.emit(DONE)
            slot.release(self.model)

    def finish_all(self) -> None:
        """End every running generation now, with finish_reason "length" (a shutdown ran out of time)."""
        for slot in self.slots:
            if slot.job is not None:
                slot.finish(self.model, "length")

    def step(self) -> None:
        """One decode of the next tokens of every busy slot, then sampling for those that need it."""
        now = time.monotonic()
        busy = {slot.seq: slot.started_at for slot in self.slots if slot.job is not None}
        self._step(now)
        for slot in self.slots:
            if slot.seq in busy and slot.job is None:
                self._on_request_done(time.monotonic() - busy[slot.seq])

    def _step(self, now: float) -> None:
        model = self.model
        for slot in self.slots:
            if slot.job is not None and slot.job.stream.cancelled.is_set():
                slot.release(model)  # the client went away: stop at once
            elif slot.job is not None and slot.job.deadline is not None and now > slot.job.deadline:
                log.info("request in slot %d passed its deadline after %d tokens", slot.seq, slot.generated)
                slot.finish(model, "length")
        entries: list[tuple[int, list[int], bool]] = []
        owners: list[Slot] = []
        budget = self.n_batch
        for slot in self.slots:  # generating slots first: one token each keeps every stream moving
            if slot.job is not None and slot.next_token is not None:
                entries.append((slot.seq, [slot.next_token], True))
                owners.append(slot)
                slot.next_token = None
                budget -= 1
        for slot in self.slots:  # then prompts, in chunks, with what is left of the batch
            if budget <= 0:
                break
            if slot.job is not None and slot.pending:
                chunk, slot.pending = slot.pending[:budget], slot.pending[budget:]
                entries.append((slot.seq, chunk, not slot.pending))
                owners.append(slot)
                budget -= len(chunk)
        if not entries:
            return
        try:
            indices = model.decode(entries)
        except ApplianceError as exc:
            self._fail_all(exc)
            return
        except Exception as exc:  # llama.cpp failed: no request must hang on it
            log.exception("decode failed")
            self._fail_all(EngineFailure(f"generation failed: {exc}"))
            return
        for slot, index in zip(owners, indices, strict=True):
            if index < 0 or slot.job is None:
                continue
            try:
                slot.on_token(model, model.sample(slot._sampler, index, slot.job.top_logprobs))
            except ApplianceError as exc:
                slot.fail(model, exc)

    def _fail_all(self, error: ApplianceError) -> None:
        for slot in self.slots:
            if slot.job is not None:
                slot.fail(self.model, error)
