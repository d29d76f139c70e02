"""Speculative decoding with a draft model (llama-server's --model-draft): a small model sharing the
target's vocabulary guesses the next tokens greedily, and the target checks them in one decode as it
checks prompt-lookup guesses (appliance.engine.speculation), so the output is plain decoding's.

One draft context serves every slot: its sequence s follows what slot s holds in the target's cache. It
is caught up only when the slot guesses (the tokens the target decoded since, read in the decode that
makes the first guess), and cut back where the target's cache was (refused guesses, a new request's
prompt). A guess stops where the draft's top probability falls below ``p_min`` (llama.cpp's
--draft-p-min): an unsure token is unlikely to be kept and costs a wider target step. All slots guessing
in a step share the draft's decodes: one batch per guessed position.

Whether a guess pays is decided as for prompt lookup (``Acceptance.worth``), with the draft's own
decodes counted: each guessed token costs its share of the draft's decodes (the reading, and the decodes
that guessed nothing) besides the target's wider step. Unlike prompt lookup, a slot that stopped guessing
does not start again, nor probe: the draft would first read every token generated since its last guess,
which on a CPU is a long decode in the middle of the reply (a burst of latency). How often the
draft's guesses are kept is a property of the pair of models more than of a request, so a slot starts
from what the slots before it learnt.

Where a change of the step's size costs several steps (llama.cpp's CUDA backend: a graph of a new shape
runs uncaptured; ``StepPrice.holds_size``), a slot holds one guess length from step to step, as prompt
lookup does (``HeldLength``, a guess's first k tokens kept with chance p^k), and the draft guesses
it whole, past ``p_min``: the model's steps keep one size. The draft's own steps keep one too: a slot's
next token is its only token besides the guesses, and the last of a guess kept whole, which the draft
has not read, is read in a decode of its own of the same size.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from appliance.engine.params import DraftSpec
from appliance.engine.speculation import Acceptance, HeldLength, StepPrice, hold_most
from appliance.engine.tokens import common_prefix
from appliance.errors import DraftModelError, ModelLoadFailed

log = logging.getLogger(__name__)

# llama.cpp's former default for --draft-p-min (common.h, before its 2025 rework set 0 with n_max 3).
P_MIN = 0.75
# llama.cpp's SPEC_VOCAB_CHECK_START_TOKEN_ID: the first tokens (BOS, EOS, padding) may be named otherwise.
SAME_TEXT_FROM = 5
# Guessed tokens, over every slot, before a slot whose guesses do not pay stops guessing for good.
EVIDENCE = 16
# Tokens a slot's first guessing decode reads at most besides its next token: what the model decoded
# since the draft's last guess (the token it refused, those it kept). More (a new prompt) is read before.
CATCH_UP = 32


class ModelDrafter(Acceptance):
    """One slot's guesses from the shared draft model, up to ``draft_max`` at a time."""

    def __init__(self, source: DraftModel, seq: int, draft_max: int) -> None:
        super().__init__()
        self._yes, self._no = source.acceptance._yes, source.acceptance._no
        self.source = source
        self.seq = seq
        self.draft_max = draft_max
        self.held: list[int] = []  # the slot's cached tokens in the target, as of the last sync
        self.stopped = False  # guesses stopped paying: none for the rest of the request
        # Where size changes are costly: the length held, guessed whole (not stopped at p_min).
        self.hold = HeldLength()
        self.holding = False

    def sync(self, held: list[int]) -> None:
        """The tokens the slot's sequence holds in the target now (read when the draft next guesses)."""
        self.held = held

    def length(self, room: int, price: StepPrice | None) -> int:
        """How many tokens to guess next, at most ``room``: as many as pay at the target's step ``price``
        with each guessed token costing its share of the draft's decodes. Where a size change costs much
        (``StepPrice.holds_size``: CUDA graphs), one length held from step to step (``HeldLength``,
        a guess's first k tokens kept with chance p^k), which the draft then guesses whole."""
        limit = min(self.draft_max, room)
        if self.stopped or limit <= 0:
            return 0
        self.holding = price is not None and price.holds_size
        if price is not None and self.holding:
            most = hold_most(price, limit, self.draft_max, self.hold.length)
            if most == 0:
                return 0
            length = self.hold.choose([self.p**k for k in range(most + 1)], price, self.source.guess_s)
        else:
            length = self.worth(limit, price, self.source.guess_s)
        # Stopped for good only on evidence: the early figures are a few noisy decodes.
        self.stopped = length == 0 and self.source.acceptance.drafted >= EVIDENCE
        return length

    def draft(self, next_token: int, room: int, price: StepPrice | None = None) -> list[int]:
        """The guessed tokens after ``next_token`` (sampled, not yet in the cache), at most ``room``
        (this slot alone; the engine asks for every slot's at once through ``DraftModel.run``)."""
        return self.source.run([(self, next_token, self.length(room, price))])[0]

    def feedback(self, drafted: int, kept: int) -> None:
        super().feedback(drafted, kept)
        self.source.acceptance.feedback(drafted, kept)


class DraftModel:
    """The draft model's context (a LlamaModel with one sequence per slot), shared by the slots."""

    def __init__(self, model: Any, p_min: float = P_MIN) -> None:
        self.model = model
        self.p_min = p_min
        # Seconds of the draft's decodes and tokens they guessed, decaying sums: their ratio is the price
        # of a guess besides the target's wider step.
        self._spent_s = self._made = 0.0
        self.acceptance = Acceptance()  # every slot's guesses together

    @property
    def guess_s(self) -> float:
        """Seconds of the draft's work per token it guessed, recent work counting most (0 before any)."""
        return self._spent_s / self._made if self._made else 0.0

    def drafter(self, seq: int, draft_max: int) -> ModelDrafter:
        return ModelDrafter(self, seq, draft_max)

    def run(self, asks: list[tuple[ModelDrafter, int, int]]) -> list[list[int]]:
        """Greedy guesses for each (drafter, next token, length), the slots' decodes batched: the first
        reads what each slot's sequence lacks and its next token, each following one the guesses just
        made by the slots still guessing. A slot stops at its length or at a guess the draft is less
        than ``p_min`` sure of (which is not kept). A draft that fails guesses nothing (the target goes
        on alone) and forgets those sequences."""
        out: list[list[int]] = [[] for _ in asks]
        wanted = [i for i, (_, _, length) in enumerate(asks) if length > 0]
        if not wanted:
            return out
        try:
            spent_s = self._guess(asks, wanted, out)
        except Exception as exc:  # a draft's failure must not fail the requests: they go on unguessed
            log.warning("the draft model failed (%s); its sequences start over", exc)
            for i in wanted:
                self.model.forget(asks[i][0].seq)
            return [[] for _ in asks]
        self._spent_s = self._spent_s * 0.9 + spent_s
        self._made = self._made * 0.9 + sum(len(out[i]) for i in wanted)
        return out

    def _guess(
        self, asks: list[tuple[ModelDrafter, int, int]], wanted: list[int], out: list[list[int]]
    ) -> float:
        """Fill ``out`` with the guesses; the seconds the guessing decodes took (not the reading of a new
        prompt before them: that is paid once a request, as the model's own reading of it)."""
        model = self.model
        share = max(1, model.options.n_batch // len(wanted))  # the first decode's tokens per slot
        entries, singly = [], {}
        for i in wanted:
            drafter, next_token, _ = asks[i]
            if drafter.holding:  # the last one (a guess kept whole) read apart, one token a decode
                singly[drafter.seq], missing = self._catch_up(drafter, 1), []
            else:
                missing = self._catch_up(drafter, min(share - 1, CATCH_UP))
            entries.append((drafter.seq, [*missing, next_token], 1))
        started = time.perf_counter()
        for at in range(max(map(len, singly.values()), default=0)):
            model.decode([(seq, [rest[at]], 1) for seq, rest in singly.items() if at < len(rest)])
        live = wanted
        while live:
            indices = model.decode(entries)
            entries, still = [], []
            for i, index in zip(live, indices, strict=True):
                drafter, _, length = asks[i]
                token, p = model.top_token(index)
                if p < self.p_min and not drafter.holding:
                    continue
                out[i].append(token)
                if len(out[i]) < length:
                    entries.append((drafter.seq, [token], 1))
                    still.append(i)
            live = still
        return time.perf_counter() - started

    def _catch_up(self, drafter: ModelDrafter, last: int) -> list[int]:
        """Cut the draft's sequence back to what it shares with the slot's, read the rest but its last
        ``last`` tokens (in n_batch chunks), and return those, for the first guessing decode."""
        model, seq, held = self.model, drafter.seq, drafter.held
        cached = model.cached_tokens(seq)
        model.truncate(seq, common_prefix(cached, held))
        missing = held[len(model.cached_tokens(seq)) :]
        n_batch = model.options.n_batch
        while len(missing) > last:
            chunk = missing[: min(n_batch, len(missing) - last)]
            model.decode([(seq, chunk, 0)])
            missing = missing[len(chunk) :]
        return missing

    def close(self) -> None:
        self.model.close()


def vocabulary_mismatch(target: Any, draft: Any) -> str | None:
    """Why the loaded ``draft`` cannot guess tokens for the loaded ``target``, as llama.cpp's
    common_speculative_are_compatible judges (the header was compared before: appliance.planner.draft):
    a token from the sixth on whose text differs. None where every shared token reads the same."""
    for token in range(SAME_TEXT_FROM, min(target.n_vocab, draft.n_vocab)):
        theirs, ours = draft.token_text(token), target.token_text(token)
        if theirs != ours:
            return f"token {token} is {theirs!r} in it, {ours!r} in the model"
    return None


def load_draft(target: Any, spec: DraftSpec) -> Any:
    """The draft model of ``spec`` loaded for ``target`` (a LlamaModel): DraftModelError where its tokens
    read otherwise or its cache cannot be cut back (recurrent, sliding-window); None, with a warning,
    where llama.cpp cannot load it (the model is served without)."""
    from appliance.engine.llama import LlamaModel  # llama.cpp loads here, not on import

    try:
        draft = LlamaModel(spec.path, spec.options)
    except ModelLoadFailed as exc:
        log.warning("the draft model is left out: %s", exc.message)
        return None
    problem = vocabulary_mismatch(target, draft)
    if problem is None and not draft.can_truncate:
        problem = "its cache cannot be cut back to the model's (a recurrent or sliding-window model)"
    if problem is not None:
        draft.close()
        raise DraftModelError(f"draft model {spec.path.name} cannot draft for {target.path.name}: {problem}")
    log.info("draft model %s loaded (%s GPU layers)", spec.path.name, spec.options.n_gpu_layers)
    return draft
