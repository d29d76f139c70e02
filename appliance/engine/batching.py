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

from appliance.backend import Finished, FinishReason, TextDelta, TokenLogprob, Usage
from appliance.engine.draft_model import DraftModel, ModelDrafter
from appliance.engine.faults import Faults
from appliance.engine.formats.reader import ReplyEvent
from appliance.engine.jobs import DONE, GenerationJob
from appliance.engine.params import GeneratedToken
from appliance.engine.payoff import CALM, Payoff
from appliance.engine.prompt_cache import PromptCache
from appliance.engine.speculation import NgramDrafter, StepCost, StepPrice
from appliance.engine.text import StopScanner
from appliance.engine.tokens import common_prefix
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
        self.fault: str | None = None  # the injected fault this request asks for (tests only)
        self.drafter: NgramDrafter | ModelDrafter | None = None
        self.last_used = 0.0  # monotonic seconds when its last request ended

    def start(
        self, model: Any, job: GenerationJob, draft_max: int = 0, draft: DraftModel | None = None
    ) -> None:
        self._sampler = model.new_sampler(job.sampling)  # raises InvalidRequest for a bad grammar
        if job.sampling.draft_max is not None:  # the request's own bound (llama-server's speculative.n_max)
            draft_max = job.sampling.draft_max
        elif job.sampling.repeatable:
            # A seed asks for the same output each time. llama.cpp's logits change slightly with the
            # shape of the step a token is decoded in (docs/API.md): guesses, whose lengths follow
            # measured step times, and a prefix reused from an earlier request would change them.
            draft_max = 0
        # Guesses where the cache can be cut back past a refused guess: from the draft model where one
        # is loaded (appliance.engine.draft_model), else from the prompt and the reply
        # (appliance.engine.speculation). One source per slot, as llama-server has.
        self.drafter = None
        if draft_max > 0 and model.can_truncate:
            self.drafter = (
                draft.drafter(self.seq, draft_max) if draft is not None else NgramDrafter(draft_max)
            )
        self.job = job
        self.started_at = time.monotonic()
        if job.sampling.repeatable:  # read whole, in the steps of the first time (see draft_max above)
            model.forget(self.seq)
            self.reused = 0
        else:
            self.reused = model.reuse_prefix(self.seq, job.prompt)
        self.pending = job.prompt[self.reused :]
        self.next_token: int | None = None
        self.generated = 0
        self.scanner = StopScanner(job.stop)
        self.logprobs: list[TokenLogprob] = []
        self.thought = 0  # tokens of thoughts so far
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
        special = step.token in job.preserved
        text = self.scanner.feed(model.piece(step.token, special=special))
        if job.reader is not None:
            self._emit(job.reader.feed(text))
            if job.reader.thinking and job.thinking_budget is not None:
                self.thought += 1
                if self.thought >= job.thinking_budget:
                    self._end_thoughts(model, step.token)
                    return
        elif text or self.logprobs:
            job.stream.emit(TextDelta(text, tuple(self.logprobs)))
            self.logprobs = []
        if self.scanner.stopped:
            self.finish(model, "stop")
        elif self.generated >= job.max_tokens:
            self.finish(model, "length")
        else:
            self.next_token = step.token

    def _end_thoughts(self, model: Any, token: int) -> None:
        """The thinking budget is spent: write the end of the thoughts for the model (as llama-server's
        reasoning budget does), then let it answer. The tokens are read like a prompt chunk after the
        one just sampled; the sampler sees them as if it had chosen them."""
        job = self.job
        assert job is not None and job.reader is not None
        forced = list(job.end_thoughts)
        text = self.scanner.feed(b"".join(model.piece(t, special=t in job.preserved) for t in forced))
        self._emit(job.reader.feed(text))
        model.force(self._sampler, forced)
        self.generated += len(forced)
        self.pending = [token, *forced]
        self.next_token = None
        if self.generated >= job.max_tokens:
            self.finish(model, "length")

    def guess(self, model: Any, room: int, price: StepPrice | None) -> list[int]:
        """Tokens guessed to follow ``next_token`` (none without a drafter), at most ``room``, and at
        most as many as the request may still generate after it; as many as pay at ``price``."""
        if self.drafter is None or self.next_token is None or self.job is None:
            return []
        self.drafter.sync(model.cached_tokens(self.seq))
        room = min(room, self.job.max_tokens - self.generated - 1)
        return self.drafter.draft(self.next_token, room, price)

    def guess_length(self, model: Any, room: int, price: StepPrice | None) -> int:
        """With a draft model: how many tokens to ask it for after ``next_token`` (as ``guess`` bounds
        them); the engine asks for every slot's at once."""
        if not isinstance(self.drafter, ModelDrafter) or self.next_token is None or self.job is None:
            return 0
        self.drafter.sync(model.cached_tokens(self.seq))
        return self.drafter.length(min(room, self.job.max_tokens - self.generated - 1), price)

    def on_outputs(self, model: Any, index: int, drafted: list[int]) -> int:
        """Sample at batch ``index`` (after the token just decoded) and, while each sample confirms the
        next of the ``drafted`` tokens decoded with it, at the position after that one. Returns how
        many drafted tokens were confirmed; the others must leave the cache."""
        assert self.job is not None
        kept = 0
        stream = self.job.stream
        if drafted:  # the tokens this step brings go out together (JobStream.hold)
            stream.hold()
        try:
            while True:
                step = model.sample(self._sampler, index + kept, self.job.top_logprobs)
                self.on_token(model, step)
                if self.job is None or self.next_token is None or kept == len(drafted):
                    break  # finished, thoughts ended for it, or every guess confirmed (and one more)
                if step.token != drafted[kept]:
                    break  # the sampled token replaces the refused guess: it is decoded next
                kept += 1
        finally:
            stream.flush()
        if self.drafter is not None and drafted:
            self.drafter.feedback(len(drafted), kept)
        return kept

    def finish(self, model: Any, reason: str) -> None:
        job = self.job
        assert job is not None
        rest = self.scanner.flush()
        usage = Usage(len(job.prompt), self.generated, self.reused)
        drafter = self.drafter
        if drafter is not None and drafter.drafted:
            log.debug("slot %d kept %d of %d guessed tokens", self.seq, drafter.kept, drafter.drafted)
        stream = job.stream
        finish: FinishReason = "stop" if reason == "stop" else "length"
        if job.reader is not None:
            events = job.reader.feed(rest)
            last, calls = job.reader.finish(cut=finish == "length")
            self._emit(events + last)
            if self.logprobs:
                stream.emit(TextDelta("", tuple(self.logprobs)))
            if calls and finish == "stop":
                finish = "tool_calls"
        else:
            calls = ()
            if rest or self.logprobs:
                stream.emit(TextDelta(rest, tuple(self.logprobs)))
        stream.emit(Finished(finish, usage, calls, self.scanner.matched))
        self.release(model)

    def _emit(self, events: list[ReplyEvent]) -> None:
        """A reader's events; the log-probabilities of the tokens since the last text go with the next
        text (thoughts or words), or alone once the reply is over."""
        assert self.job is not None
        for event in events:
            if isinstance(event, TextDelta) and self.logprobs:
                event = TextDelta(event.text, tuple(self.logprobs), event.reasoning)
                self.logprobs = []
            self.job.stream.emit(event)

    def fail(self, model: Any, error: ApplianceError) -> None:
        """End the request with ``error``; the others in the batch go on."""
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
        self.fault = None
        self.last_used = time.monotonic()


def failure(what: str, exc: Exception) -> ApplianceError:
    """The error a request gets for ``exc`` raised while serving it: itself when it is one of ours,
    else an EngineFailure naming only the exception's type (the details are in the daemon's log)."""
    if isinstance(exc, ApplianceError):
        log.warning("%s failed: %s", what, exc.message)
        return exc
    log.error("%s failed", what, exc_info=exc)
    return EngineFailure(f"{what} failed ({type(exc).__name__}); see the daemon's log")


class BatchingEngine:
    def __init__(
        self,
        model: Any,
        on_request_done: Callable[[float], None] = lambda _s: None,
        faults: Faults | None = None,
        draft_max: int = 0,
        prompt_cache: PromptCache | None = None,
        draft: DraftModel | None = None,
    ) -> None:
        self.model = model
        self.draft = draft  # the draft model's context, guessing for every slot where one is loaded
        # Tokens guessed and kept, by source ("ngram", "draft"), over the engine's life (for metrics).
        self.speculated: dict[str, tuple[int, int]] = {}
        # Prefixes a slot gives up, kept in host memory (appliance.engine.prompt_cache); only where the
        # cache of a sequence can be cut at any token, as reusing a kept prefix needs.
        self.prompt_cache = prompt_cache if model.can_truncate else None
        self.draft_max = draft_max  # tokens guessed at most per step and slot (0: no speculation)
        self.step_cost = StepCost()  # what generation steps take here, to guess only where it pays
        self._last_size = 0  # tokens in the last decode (a size change costs time of its own)
        self._run = 0  # decodes of that size in a row (on a GPU the first two are slow: StepCost)
        # Whether guesses paid, measured (None: guess wherever the drafters' pricing says they pay).
        self.payoff: Payoff | None = Payoff()
        self._generating = 0  # sequences the last step generated for
        self._calm = 0  # steps in a row generating for as many sequences and reading no prompt
        self.slots = [Slot(seq) for seq in range(model.n_seq)]
        # llama.cpp takes at most n_ctx tokens a decode in a causal model's context.
        self.n_batch = min(model.options.n_batch, model.n_ctx)
        self._on_request_done = on_request_done  # seconds a request held its slot (for Retry-After)
        self._faults = faults

    @property
    def active(self) -> int:
        return sum(1 for s in self.slots if s.job is not None)

    def has_free_slot(self) -> bool:
        return any(s.job is None for s in self.slots)

    def start(self, job: GenerationJob) -> None:
        """Put ``job`` in the idle slot whose cached prefix it shares most (prefix reuse), or, where a
        prefix kept in host memory shares more, copy that into the least recently used idle slot. A
        seeded job (``SamplingParams.repeatable``) reads its whole prompt: the least recently used slot."""
        idle = [s for s in self.slots if s.job is None]
        shared = {s.seq: common_prefix(self.model.cached_tokens(s.seq), job.prompt) for s in idle}
        if job.sampling.repeatable:  # it reads its whole prompt (Slot.start): the least recently used slot
            shared = dict.fromkeys(shared, 0)
        slot = self._choose(idle, shared, len(job.prompt))
        if self.prompt_cache is not None:
            restored = None if job.sampling.repeatable else self._with_kept_prefix(job.prompt, idle, shared)
            if restored is not None:
                slot = restored  # it holds a kept prefix: nothing in it to keep
            else:
                self._keep(slot, shared[slot.seq])
        try:
            slot.start(self.model, job, self.draft_max, self.draft)
            if self._faults is not None:
                slot.fault = self._faults.point(job.prompt)
        except Exception as exc:  # a bad grammar (InvalidRequest), or a bug: this request only
            job.stream.emit(failure("starting the request", exc))
            job.stream.emit(DONE)
            slot.release(self.model)

    @staticmethod
    def _choose(idle: list[Slot], shared: dict[int, int], prompt: int) -> Slot:
        """The idle slot sharing the most with a prompt of ``prompt`` tokens, where that is at least a
        tenth of it (a chat template's first tokens are not worth another conversation's cache); else,
        and among equals, the least recently used (llama-server's rule), so a new conversation does not
        push out the one before it while other slots sit unused."""

        def worth(slot: Slot) -> int:
            n = shared[slot.seq]
            return n if n * 10 >= prompt else 0

        return max(idle, key=lambda s: (worth(s), -s.last_used))

    def _with_kept_prefix(self, prompt: list[int], idle: list[Slot], shared: dict[int, int]) -> Slot | None:
        """The slot a kept prefix of ``prompt`` was copied into, where one saves reading at least the
        cache's ``min_tokens`` more than the best slot; None where none does (or the copy failed)."""
        cache = self.prompt_cache
        assert cache is not None
        kept, n = cache.best(prompt)
        if kept is None or n - max(shared.values()) < cache.min_tokens:
            return None
        slot = min(idle, key=lambda s: s.last_used)
        self._keep(slot, 0)
        if not self.model.restore_state(slot.seq, kept.state, kept.tokens):
            log.warning("a kept prefix of %d tokens could not be copied back into slot %d", n, slot.seq)
            return None
        cache.used(kept, n)
        log.debug("slot %d: %d prompt tokens copied back from host memory", slot.seq, n)
        return slot

    def _keep(self, slot: Slot, common: int) -> None:
        """Before ``slot``'s cache is cut to its first ``common`` tokens: keep the whole of it in host
        memory where most of it would be lost (another conversation takes the slot), as llama-server
        does; not where the slot goes on with most of it (the same agent's next task: copying its long
        prefix out every time would cost each request time for a short tail of little worth)."""
        cache = self.prompt_cache
        assert cache is not None
        tokens = self.model.cached_tokens(slot.seq)
        if len(tokens) - common < cache.min_tokens or common * 2 >= len(tokens):
            return
        try:
            size = self.model.state_size(slot.seq)
            if cache.wants(tokens, size):
                cache.put(tokens, self.model.save_state(slot.seq, size))
        except Exception as exc:  # the request goes on without: it reads its whole prompt
            log.warning("keeping slot %d's prefix in host memory failed: %s", slot.seq, exc)

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
        entries: list[tuple[int, list[int], int]] = []
        owners: list[Slot] = []
        generating = [slot for slot in self.slots if slot.job is not None and slot.next_token is not None]
        budget = self.n_batch - len(generating)
        guessing = any(slot.drafter is not None for slot in generating)
        allowed = guessing and self._may_guess(len(generating))
        began = time.perf_counter()
        brought = -sum(slot.generated for slot in generating) if guessing else 0
        guesses: dict[int, list[int]] = {}
        if allowed:
            price = self.step_cost.price(len(generating), self._last_size)
            guesses = self._guesses(generating, budget, price)
        for slot in generating:  # generating slots first: one token each keeps every stream moving
            assert slot.next_token is not None
            guessed = guesses.get(slot.seq, [])  # and the tokens guessed to follow it
            entries.append((slot.seq, [slot.next_token, *guessed], 1 + len(guessed)))
            owners.append(slot)
            slot.next_token = None
            budget -= len(guessed)
        for slot in self.slots:  # then prompts, in chunks, with what is left of the batch
            if budget <= 0:
                break
            if slot.job is not None and slot.pending:
                chunk, slot.pending = slot.pending[:budget], slot.pending[budget:]
                entries.append((slot.seq, chunk, int(not slot.pending)))
                owners.append(slot)
                budget -= len(chunk)
        if not entries:
            return
        started = time.perf_counter()
        if self._faults is not None:
            for slot in owners:
                Faults.check("step", slot.fault, slot.generated)
        self._decode_and_sample(entries, owners)
        ended = time.perf_counter()
        size = sum(len(tokens) for _, tokens, _ in entries)
        self._run = self._run + 1 if size == self._last_size else 1
        self._last_size = size
        generation_only = len(entries) == len(generating)
        calm = generation_only and len(generating) == self._generating
        self._calm = self._calm + 1 if calm else int(generation_only)
        self._generating = len(generating)
        if guessing and generation_only:  # a step to learn from
            seconds = self.step_cost.clock(size, ended - started, self._run)
            self.step_cost.add(size, seconds, self._run)
            if self.payoff is not None:
                brought += sum(slot.generated for slot in generating)
                self.payoff.add(
                    len(generating), brought, seconds + (started - began), seconds,
                    guessed=size > len(generating), allowed=allowed, calm=self._calm >= CALM,
                    held=self._run >= StepCost.HELD,
                )  # fmt: skip

    def _may_guess(self, sequences: int) -> bool:
        """Whether a step generating for ``sequences`` may guess. Not with several sequences where a size
        change costs far more than a step (``StepCost.costly``: CUDA graphs): each slot's guess changes
        the size of a step that holds every stream, and the drafters price those steps from tables that
        mix one sequence's guesses with many sequences' tokens (on the H200, default model: chat at 4
        and 8 streams ran at 0.89x and 0.83x of plain decoding, an edit at 4 streams 0.88x; docs/
        BENCHMARKS.md). Elsewhere as the books say (appliance.engine.payoff)."""
        if sequences > 1 and self.step_cost.costly():
            return False
        return self.payoff is None or self.payoff.allows(sequences)

    def _guesses(self, generating: list[Slot], budget: int, price: StepPrice | None) -> dict[int, list[int]]:
        """Each generating slot's guesses, by sequence, within ``budget`` tokens in all: prompt lookup's
        slot by slot, the draft model's for all its slots at once; each slot's priced with the guesses
        of those before it in the step."""
        out: dict[int, list[int]] = {}
        asks: list[tuple[ModelDrafter, int, int]] = []
        for slot in generating:
            if isinstance(slot.drafter, ModelDrafter):
                length = slot.guess_length(self.model, budget, price)
                if length > 0:
                    assert slot.next_token is not None
                    asks.append((slot.drafter, slot.next_token, length))
            else:
                out[slot.seq] = guessed = slot.guess(self.model, budget, price)
                length = len(guessed)
            budget -= length
            if price is not None:
                price = price.plus(length)
        if asks and self.draft is not None:
            for (drafter, _, _), guessed in zip(asks, self.draft.run(asks), strict=True):
                out[drafter.seq] = guessed
        return out

    def _decode_and_sample(self, entries: list[tuple[int, list[int], int]], owners: list[Slot]) -> None:
        model = self.model
        try:
            if self._faults is not None:
                for slot in owners:
                    Faults.check("decode", slot.fault, slot.generated)
            indices = model.decode(entries)
        except Exception as exc:
            if len(entries) > 1:
                # One sequence's tokens fail the whole batch (each sequence's cache is rolled back to
                # before it): decode each alone, so only the one at fault fails and the others go on.
                log.warning(
                    "decoding %d sequences together failed (%s); retrying each alone", len(entries), exc
                )
                for entry, slot in zip(entries, owners, strict=True):
                    if slot.job is not None:
                        self._decode_and_sample([entry], [slot])
                return
            if owners[0].job is not None:
                owners[0].fail(model, failure("decoding", exc))
            return
        for slot, index, (seq, tokens, outputs) in zip(owners, indices, entries, strict=True):
            if index < 0 or slot.job is None:
                continue
            drafted = tokens[len(tokens) - outputs + 1 :]  # the guesses decoded after its token
            kept = 0
            try:
                if self._faults is not None:
                    Faults.check("sample", slot.fault, slot.generated)
                kept = slot.on_outputs(model, index, drafted)
                if drafted:
                    source = "draft" if isinstance(slot.drafter, ModelDrafter) else "ngram"
                    guessed, confirmed = self.speculated.get(source, (0, 0))
                    self.speculated[source] = (guessed + len(drafted), confirmed + kept)
            except Exception as exc:  # a bug or a llama.cpp error in one request: fail that one only
                if slot.job is not None:
                    slot.fail(model, failure("generation", exc))
            finally:
                if kept < len(drafted):  # refused guesses leave the cache (it is kept for a next request)
                    model.truncate(seq, len(model.cached_tokens(seq)) - (len(drafted) - kept))

    def fail_all(self, error: ApplianceError) -> None:
        """End every running request with ``error`` (the step failed where no one request is at fault)."""
        for slot in self.slots:
            if slot.job is not None:
                slot.fail(self.model, error)
