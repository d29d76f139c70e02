"""Speculative decoding with a draft model, on real models: the embedded SmolLM2-135M (Q4_1) drafting
for its own Q8_0 requantization. The replies are plain decoding's, alone and batched, greedy and
seeded; the guesses are counted by source; a draft whose tokens read otherwise is refused."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from appliance.engine.batching import BatchingEngine
from appliance.engine.draft_model import DraftModel, load_draft, vocabulary_mismatch
from appliance.engine.jobs import GenerationJob, JobStream
from appliance.engine.params import DraftSpec, LoadOptions, SamplingParams
from appliance.engine.speculation import FIRST_DRAFT, StepCost, StepPrice
from appliance.errors import DraftModelError
from benchmarks.engine_steps import Charged, StepTimes, step_sizes
from tests.draft_models import embedded, renamed_token, requantized
from tests.engine_streams import replies
from tests.gpu_steps import H200, h200_price

# One thread each: no spinning on a busy machine.
OPTIONS = LoadOptions(n_ctx=4096, n_seq_max=2, flash_attn="on", n_threads=1, n_threads_batch=1)
PROMPTS = [
    "<|im_start|>user\nWrite a short poem about the sea.<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nWhat does a CPU do? Answer in two sentences.<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nList three colours of the rainbow.<|im_end|>\n<|im_start|>assistant\n",
]


class GpuLikeCost(StepCost):
    """A step whose fixed part dominates and is far longer than a draft's (as a 7B model's on a GPU,
    about 20 ms whatever the few tokens it reads, against 2 ms for a 135M draft): there guesses pay, so
    every step asks for them. Only the machine's timing is stood in for (10 s: far beyond a draft step
    here, however busy the machine); the models and their guesses are real."""

    def seconds(self, tokens: int) -> float | None:
        return 10.0 + 0.001 * tokens

    def clock(self, tokens: int, seconds: float, run: int = StepCost.HELD) -> float:
        return 10.0 + 0.001 * tokens


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    from appliance.engine.llama import LlamaModel

    target = LlamaModel(requantized(tmp_path_factory.mktemp("draft")), OPTIONS)
    draft = LlamaModel(embedded(), OPTIONS)
    yield target, draft
    target.close()
    draft.close()


def _generate(
    target: Any,
    draft: Any | None,
    sampling: SamplingParams,
    *,
    gpu_like: bool = False,
    max_tokens: int = 80,
    prompts: list[str] = PROMPTS,
    engine: BatchingEngine | None = None,
) -> tuple[list[str], int, BatchingEngine]:
    """Every prompt's reply from one engine (two slots: the third waits for one), the steps it took."""
    loop = asyncio.new_event_loop()
    if engine is None and draft is None:  # plain decoding: no guesses at all
        engine = BatchingEngine(target, draft_max=0)
    elif engine is None:
        engine = BatchingEngine(target, draft_max=16, draft=DraftModel(draft))
    if gpu_like:
        engine.step_cost = GpuLikeCost()
    target.forget()
    if draft is not None:
        draft.forget()
    streams = []
    for prompt in prompts:
        stream = JobStream(loop)
        tokens = target.tokenize(prompt, add_special=True, parse_special=True)
        streams.append((stream, GenerationJob(stream, tokens, sampling, max_tokens)))
    waiting = list(streams)
    steps = 0
    while waiting or engine.active:
        while waiting and engine.has_free_slot():
            engine.start(waiting.pop(0)[1])
        engine.step()
        steps += 1

    try:
        return replies(loop, [stream for stream, _ in streams]), steps, engine
    finally:
        loop.close()


def test_greedy_replies_are_plain_decodings_with_the_draft_batched(models: tuple[Any, Any]) -> None:
    target, draft = models
    greedy = SamplingParams(temperature=0.0)
    plain, plain_steps, _ = _generate(target, None, greedy)
    drafted, drafted_steps, engine = _generate(target, draft, greedy, gpu_like=True)
    assert drafted == plain and all(plain)
    guessed, kept = engine.speculated["draft"]
    # Its own requantization: the draft's sure guesses are nearly all kept, several tokens a step.
    assert guessed > 60 and kept > 0.7 * guessed, (guessed, kept)
    assert drafted_steps < plain_steps * 0.8, (plain_steps, drafted_steps)
    assert "ngram" not in engine.speculated  # one source per slot: the draft model where one is loaded


def test_seeded_sampling_gives_the_same_replies_with_the_draft(models: tuple[Any, Any]) -> None:
    """Each kept guess was sampled at its position by the target's own sampler, with the same random
    draws in the same order: a seed gives the same reply at any temperature."""
    target, draft = models
    seeded = SamplingParams(temperature=0.7, seed=42)
    plain, _, _ = _generate(target, None, seeded, max_tokens=50)
    # A seeded request guesses only when it asks to itself (speculative.n_max).
    drafted, _, engine = _generate(target, draft, replace(seeded, draft_max=16), gpu_like=True, max_tokens=50)
    assert drafted == plain and engine.speculated["draft"][0] > 0


def test_on_this_machine_the_measured_cost_decides_and_the_replies_stay_the_same(
    models: tuple[Any, Any],
) -> None:
    """With the steps' real cost (a CPU, where a draft as large as its model cannot pay), the engine
    guesses only until it has measured that, and then stops: the replies are the same either way."""
    target, draft = models
    greedy = SamplingParams(temperature=0.0)
    plain, _, _ = _generate(target, None, greedy, max_tokens=60)
    drafted, _, engine = _generate(target, draft, greedy, max_tokens=60)
    assert drafted == plain
    assert engine.draft is not None and engine.draft.guess_s > 0


def test_a_request_may_turn_guessing_off(models: tuple[Any, Any]) -> None:
    target, draft = models
    plain, _, _ = _generate(target, None, SamplingParams(temperature=0.0), max_tokens=30)
    off, _, engine = _generate(
        target, draft, SamplingParams(temperature=0.0, draft_max=0), gpu_like=True, max_tokens=30
    )
    assert off == plain and engine.speculated == {}
    assert all(slot.drafter is None for slot in engine.slots)


def test_a_slot_that_stops_guessing_does_not_start_again(models: tuple[Any, Any]) -> None:
    """Once guesses are seen not to pay, a slot stops for the rest of its request: starting again would
    first have the draft read every token generated since (a long decode amid the reply)."""
    _, draft = models
    source = DraftModel(draft)
    drafter = source.drafter(0, 16)
    assert drafter.length(16, None) == FIRST_DRAFT  # the cost unknown: one length, its step time learned
    each_a_step = StepPrice(1, lambda n: 0.010 * n)  # each token costs as much as a step
    assert drafter.length(16, each_a_step) == 0 and not drafter.stopped
    source.acceptance.feedback(16, 16)  # evidence: even guesses always kept would not pay there
    assert drafter.length(16, each_a_step) == 0 and drafter.stopped
    assert drafter.length(16, StepPrice(1, lambda n: 10.0 + 0.001 * n)) == 0


def test_the_vocabularies_are_compared_token_by_token(models: tuple[Any, Any], tmp_path: Path) -> None:
    target, draft = models
    assert vocabulary_mismatch(target, draft) is None
    renamed, text = renamed_token(tmp_path)
    spec = DraftSpec(renamed, OPTIONS)
    with pytest.raises(DraftModelError) as refused:
        load_draft(target, spec)
    assert "token 1000" in refused.value.message and repr(text) in refused.value.message


def test_where_size_changes_cost_a_slot_holds_one_length_and_the_draft_guesses_it_whole(
    models: tuple[Any, Any],
) -> None:
    """With the H200's costs (a size change costs ten steps), a slot's guess length is chosen once and
    held from step to step, and the draft guesses all of it, sure or not: the model's steps keep one
    size."""
    target, draft = models
    source = DraftModel(draft, p_min=1.01)  # no token is sure enough to go on from, but for a length held
    drafter = source.drafter(0, 16)
    drafter._yes, drafter._no = 9.0, 1.0  # nine guessed tokens in ten kept
    held = drafter.length(64, h200_price(1, last=1))
    assert held > 1 and drafter.holding
    assert drafter.length(64, h200_price(1, last=1 + held)) == held
    assert drafter.length(held - 1, h200_price(1, last=1 + held)) == 0  # the reply's last tokens: plain
    prompt = target.tokenize(PROMPTS[0], add_special=True, parse_special=True)
    draft.forget()
    drafter.sync(prompt[:-1])
    assert len(source.run([(drafter, prompt[-1], held)])[0]) == held
    drafter.holding = False  # deciding step by step, a guess stops at the first unsure token
    assert source.run([(drafter, prompt[-1], held)])[0] == []
    # Where each guessed token costs the draft a step of the model's, no length pays.
    dear = source.drafter(1, 16)
    source._spent_s, source._made = 0.005, 1.0
    assert dear.length(64, h200_price(1, last=1)) == 0


class ScaledTimes(StepTimes):
    """The H200's step times a thousand times longer: beside them a draft's decode on this CPU costs as
    little as a small draft's does beside a large model's step on a GPU."""

    def __init__(self) -> None:
        self.held = {n: ms * 1000 for n, ms in H200.held.items()}
        self.changed = {n: ms * 1000 for n, ms in H200.changed.items()}
        self.capture_ms = H200.capture_ms * 1000


def test_with_a_gpus_size_changes_the_model_and_the_draft_keep_one_step_size(models: tuple[Any, Any]) -> None:
    """With the H200's costs (scaled so that the draft's decodes here count as little as on a GPU), a
    request after the engine learnt them is checked in steps of one size, the draft guessing one token
    a decode; the reply is plain decoding's."""
    target, draft = models
    greedy = SamplingParams(temperature=0.0)
    plain, plain_steps, _ = _generate(target, None, greedy, max_tokens=80, prompts=PROMPTS[:1])
    engine = BatchingEngine(target, draft_max=16, draft=DraftModel(draft))
    engine.step_cost = Charged(ScaledTimes())
    _generate(target, draft, greedy, max_tokens=80, prompts=PROMPTS[1:2], engine=engine)  # learns the costs
    with step_sizes(target) as sizes, step_sizes(draft) as draft_sizes:
        drafted, steps, _ = _generate(target, draft, greedy, prompts=PROMPTS[:1], engine=engine)
    assert drafted == plain
    assert engine.step_cost.changes_cost()
    changes = sum(1 for a, b in itertools.pairwise(sizes[1:]) if a != b)
    assert changes <= 3 and steps < plain_steps * 0.6, sizes
    assert set(draft_sizes[1:]) == {1}, draft_sizes  # after the prompt's read


def test_slots_holding_lengths_side_by_side_give_plain_decodings_replies(models: tuple[Any, Any]) -> None:
    """Two slots and a waiting request with the H200's costs: guesses while the costs are learned, then
    a held length in each slot left alone (steps of two streams guess nothing once a size change is
    seen to cost), the draft reading each slot's kept guess apart: greedy and seeded replies are plain
    decoding's."""
    target, draft = models
    for sampling in (SamplingParams(temperature=0.0), SamplingParams(temperature=0.7, seed=42)):
        plain, _, _ = _generate(target, None, sampling, max_tokens=32)
        engine = BatchingEngine(target, draft_max=16, draft=DraftModel(draft))
        engine.step_cost = Charged(ScaledTimes())
        guessing = replace(sampling, draft_max=16)  # a seeded request's own bound (else it runs plain)
        _generate(target, draft, guessing, max_tokens=32, prompts=PROMPTS[1:2], engine=engine)
        drafted, _, _ = _generate(target, draft, guessing, max_tokens=32, engine=engine)
        assert drafted == plain
        assert engine.step_cost.changes_cost() and engine.speculated["draft"][1] > 20
