"""Prompt-lookup speculative decoding: the drafter's guesses, and the batching engine with the embedded
model giving the same replies with guesses as without them, in fewer decodes where the reply repeats
its prompt."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from appliance.backend import Finished, TextDelta
from appliance.engine.batching import BatchingEngine
from appliance.engine.jobs import GenerationJob, JobStream
from appliance.engine.params import SamplingParams
from appliance.engine.speculation import (
    HeldLength,
    NgramDrafter,
    StepCost,
    StepPrice,
    best_length,
    censored_reach,
    reach_of,
)
from appliance.engine.tokens import common_prefix
from benchmarks.engine_steps import Charged, StepTimes, learned, step_sizes
from tests.embedded_llama import embedded_llama
from tests.engine_streams import replies
from tests.gpu_steps import H200, h200_price


def test_the_guess_is_what_followed_the_latest_earlier_occurrence() -> None:
    drafter = NgramDrafter(draft_max=8)
    drafter.limit = 8
    drafter.sync([1, 2, 3, 4, 5, 1, 2, 3, 9, 9, 7, 1, 2])
    # (1, 2, 3) was followed by 4 once and by 9 later: the latest wins.
    assert drafter.lookup(3) == [9, 9, 7, 1, 2]
    # While the steps' costs are unknown (no price), guesses of FIRST_DRAFT at most: one step size to learn.
    assert drafter.draft(3, room=8) == [9, 9, 7, 1]
    assert drafter.draft(3, room=2) == [9, 9]
    assert drafter.draft(8, room=8) == []  # (1, 2, 8) never seen
    # The n-gram that ends at the newest token is not its own earlier occurrence.
    lonely = NgramDrafter(draft_max=8)
    lonely.sync([5, 6])
    assert lonely.draft(7, room=8) == []


def test_the_index_grows_with_the_sequence_and_the_guess_length_adapts() -> None:
    drafter = NgramDrafter(draft_max=16)
    held = [10, 11, 12, 13, 14, 15]
    drafter.sync(held)
    assert drafter.draft(12, room=16) == []  # (14, 15, 12): not seen
    held += [10, 11]
    drafter.sync(held)
    assert drafter.draft(12, room=16) == [13, 14, 15, 10]  # the first guess is short (FIRST_DRAFT)
    drafter.feedback(4, 4)
    assert drafter.limit == 8
    drafter.feedback(8, 8)
    drafter.feedback(16, 16)
    assert drafter.limit == 16  # at most draft_max
    drafter.feedback(16, 3)
    assert drafter.limit == 3  # back to what was kept
    drafter.feedback(3, 0)
    assert drafter.limit == 1
    assert (drafter.drafted, drafter.kept) == (47, 31)


@pytest.fixture(scope="module")
def model() -> Iterator[Any]:
    with embedded_llama(n_ctx=4096, n_seq_max=2, flash_attn="on") as loaded:
        yield loaded


# A reply that repeats its prompt: the embedded 135M model copies prose faithfully (code it rewrites).
TEXT = (
    "The quick brown fox jumps over the lazy dog. The dog sleeps in the sun while the fox runs into the "
    "forest to find food for its family before the winter comes. In the spring the fox returns with "
    "three cubs, and the dog, now old and slow, watches them play in the tall grass by the river."
)
COPY = f"<|im_start|>user\nCopy this text exactly: {TEXT}<|im_end|>\n<|im_start|>assistant\n"
POEM = "<|im_start|>user\nWrite a short poem about the sea.<|im_end|>\n<|im_start|>assistant\n"


def _generate(model: Any, draft_max: int, prompts: list[str], sampling: SamplingParams, max_tokens: int = 120,
              engine: BatchingEngine | None = None) -> tuple[list[str], int, int]:  # fmt: skip
    """Each prompt's reply from one engine run (together, in two slots), the decodes it took, and the
    guessed tokens kept."""
    loop = asyncio.new_event_loop()
    if engine is None:
        engine = BatchingEngine(model, draft_max=draft_max)
        model.forget()
    streams = []
    for prompt in prompts:
        tokens = model.tokenize(prompt, add_special=True, parse_special=True)
        stream = JobStream(loop)
        engine.start(GenerationJob(stream, tokens, sampling, max_tokens))
        streams.append(stream)
    steps = 0
    while engine.active:
        engine.step()
        steps += 1
    kept = sum(slot.drafter.kept for slot in engine.slots if slot.drafter is not None)

    try:
        return replies(loop, streams), steps, kept
    finally:
        loop.close()


def test_greedy_replies_are_the_same_with_guesses_and_come_in_fewer_decodes(model: Any) -> None:
    greedy = SamplingParams(temperature=0.0)
    plain, plain_steps, _ = _generate(model, 0, [COPY], greedy)
    guessed, guessed_steps, kept = _generate(model, 16, [COPY], greedy)
    assert guessed == plain
    assert "the fox returns with three cubs" in plain[0]  # it does repeat the text
    assert kept > 30 and guessed_steps < plain_steps * 0.6, (plain_steps, guessed_steps, kept)


def test_a_request_sets_its_own_guess_length(model: Any) -> None:
    """llama-server's speculative.n_max: 0 turns guessing off for one request on a model that guesses,
    and a request may guess on a model configured not to."""
    greedy = SamplingParams(temperature=0.0)
    plain, plain_steps, _ = _generate(model, 0, [COPY], greedy, max_tokens=60)
    off, off_steps, off_kept = _generate(model, 16, [COPY], SamplingParams(temperature=0.0, draft_max=0), 60)
    on, on_steps, on_kept = _generate(model, 0, [COPY], SamplingParams(temperature=0.0, draft_max=8), 60)
    assert off == on == plain
    assert off_kept == 0 and off_steps == plain_steps
    assert on_kept > 10 and on_steps < plain_steps, (plain_steps, on_steps, on_kept)


def test_seeded_sampling_and_a_second_slot_give_the_same_replies_with_guesses(model: Any) -> None:
    """At a temperature, each kept guess was sampled at its position from the same distribution, with
    the same random draws in the same order: a seed gives the same reply. A free-text request beside the
    copy, in the other slot, is not disturbed by its neighbour's guesses."""
    seeded = SamplingParams(temperature=0.7, seed=42)
    prompts = [COPY, "<|im_start|>user\nWrite about the sea.<|im_end|>\n<|im_start|>assistant\n"]
    plain, _, _ = _generate(model, 0, prompts, seeded, max_tokens=60)
    # A seeded request guesses only when it asks to itself (speculative.n_max).
    guessed, _, kept = _generate(model, 16, prompts, replace(seeded, draft_max=16), max_tokens=60)
    assert guessed == plain and all(plain) and kept > 0


def test_a_seeded_request_reads_its_whole_prompt_and_guesses_only_when_it_asks_to() -> None:
    """A seed asks for the same output each time, and llama.cpp's logits change slightly with the shape of
    the step a token is decoded in: a seeded request reads its whole prompt (a prefix reused from the
    request before was decoded otherwise) and runs without guesses (their lengths follow measured step
    times) unless it sets its own bound. llama.cpp's "random" seed (-1) asks for nothing."""
    with embedded_llama(n_ctx=2048, n_seq_max=1) as loaded:
        engine = BatchingEngine(loaded, draft_max=16)
        prompt = loaded.tokenize(COPY, add_special=True, parse_special=True)
        loop = asyncio.new_event_loop()
        try:
            for sampling, guesses, reused in [
                (SamplingParams(temperature=0.7), True, False),  # the first: nothing to reuse
                (SamplingParams(temperature=0.7), True, True),
                (SamplingParams(temperature=0.7, seed=42), False, False),
                (SamplingParams(temperature=0.0, seed=0), False, False),
                (SamplingParams(temperature=0.7, seed=42, draft_max=8), True, False),
                (SamplingParams(temperature=0.7, seed=-1), True, True),
            ]:
                engine.start(GenerationJob(JobStream(loop), prompt, sampling, 4))
                slot = engine.slots[0]
                assert (slot.drafter is not None, slot.reused > 0) == (guesses, reused), sampling
                while engine.active:
                    engine.step()
        finally:
            loop.close()


def test_step_cost_learns_each_size_and_reads_between_them() -> None:
    cost = StepCost()
    cost.add(1, 0.0010)
    assert cost.seconds(1) is None  # one step is not trusted yet (a size's first may be far slower)
    for _ in range(4):
        cost.add(1, 0.0010)
    assert cost.seconds(1) == 0.0010
    assert cost.price(1) is None  # one size only: what more tokens cost is unknown
    # An H200's shape (the default model): cheap up to 8 tokens, then a slower kernel.
    for tokens, ms in ((2, 1.2), (5, 1.5), (7, 1.6), (9, 3.1), (17, 3.7)):
        for _ in range(StepCost.TRUSTED):
            cost.add(tokens, ms / 1000)
    assert cost.table() == {1: 0.001, 2: 0.0012, 5: 0.0015, 7: 0.0016, 9: 0.0031, 17: 0.0037}
    assert cost.seconds(6) == pytest.approx(0.00155)  # between 5 and 7
    assert cost.seconds(8) == pytest.approx(0.00235)  # between 7 and 9
    assert cost.seconds(25) == pytest.approx(0.0043)  # beyond: along 9 -> 17
    price = cost.price(1)
    assert price is not None and price.base == 1 and price.plus(3).base == 4


def test_below_the_sizes_seen_a_step_never_costs_nothing() -> None:
    """Only guessing steps seen (5 and 9 tokens, steeply apart): the line through them reaches zero
    before 1 token, and a plain step priced at zero would divide by it."""
    cost = StepCost()
    for _ in range(StepCost.TRUSTED):
        cost.add(5, 0.002)
        cost.add(9, 0.010)
    assert cost.seconds(1) == pytest.approx(0.002 / 5)  # its share of the 5-token step
    price = cost.price(1)
    assert price is not None and best_length(0.9, price, 16) >= 0


def test_a_slow_step_does_not_make_its_size_look_slow() -> None:
    """The first decode of a size (buffers grown) or one caught by a pause is one of the last few: the
    median of them stands, so guesses of that size are not given up for good after one bad step."""
    cost = StepCost()
    for seconds in (0.050, 0.0015, 0.0016):  # a first step 30 times the others
        cost.add(5, seconds)
    assert cost.seconds(5) == 0.0016
    for seconds in (0.0015, 0.0015, 0.0015, 0.0015):
        cost.add(5, seconds)
    assert cost.seconds(5) == 0.0015  # the slow one has left the last few
    cost.add(5, 0.020)
    assert cost.seconds(5) == 0.0015


def _price(seconds: Any, base: int = 1) -> StepPrice:
    return StepPrice(base, seconds)


# This CPU's steps with the default model (benchmarks/step_cost.py): 16.4 ms for one token, 8.4 ms more
# for each token beside it. A guessed token costs half a step: only likely guesses pay.
CPU = _price(lambda n: 0.008 + 0.0084 * n)


def test_the_guess_is_as_long_as_pays() -> None:
    # Where each token costs as much as a step (a small CPU), no guess pays, however likely.
    assert best_length(0.95, _price(lambda n: 0.010 * n), 16) == 0
    # Where the step's fixed part dominates (per-step work), likely guesses pay, and long.
    assert best_length(0.95, _price(lambda n: 0.010 + 0.0005 * n), 16) == 16
    assert best_length(0.3, _price(lambda n: 0.010 + 0.0005 * n), 16) in (1, 2, 3)
    assert best_length(0.02, _price(lambda n: 0.010 + 0.005 * n), 16) == 0


def test_beside_other_streams_a_guess_must_pay_for_the_whole_step() -> None:
    """A slot's guesses make every stream's step longer: a guess kept 95% of the time pays on this CPU
    alone, and not in a step of 4 streams, where a guessed token costs 8.4 ms against a plain token's
    10.4 ms. Priced by the slot's own token of the 4, it paid: in an edit at 4 streams in process, the
    books judged those guesses at 0.73x of plain decoding."""
    assert best_length(0.95, CPU, 16) > 0
    assert best_length(0.95, replace(CPU, base=4), 16) == 0
    assert best_length(1.0, replace(CPU, base=4), 16) == 16  # a sure copy still pays
    # The margin is of the step's streams, not of the guesses slots before this one put in it: where the
    # step's fixed part dominates (a large model), a second slot's likely guess pays after the first
    # slot's 11, as it would alone.
    gpu = _price(lambda n: 10.0 + 0.001 * n, base=2)
    assert best_length(0.5, gpu.plus(11), 16) > 0


def test_on_a_gpu_guesses_stay_within_the_cheap_sizes() -> None:
    """The H200's measured steps (default model): a guess of 8 or more makes the step twice as long, so
    even likely guesses stop at 7 where a line fitted through all sizes asked for 16."""
    h200 = {1: 1.03, 2: 1.20, 3: 1.41, 4: 1.47, 5: 1.52, 7: 1.61, 8: 1.70, 9: 3.10, 13: 3.39, 17: 3.73}
    cost = StepCost()
    for tokens, ms in h200.items():
        for _ in range(StepCost.TRUSTED):
            cost.add(tokens, ms / 1000)
    price = cost.price(1)
    assert price is not None
    assert best_length(0.95, price, 16) == 7
    assert best_length(0.6, price, 16) in (4, 5)
    assert best_length(0.1, price, 16) == 0
    # Eight slots generating: the step already holds 8 tokens, and one slot's guesses cannot pay for
    # pushing it past the cheap sizes.
    eight = cost.price(8)
    assert eight is not None and best_length(0.95, eight, 16) == 0


def test_each_lookup_is_checked_against_what_was_generated_guessed_or_not() -> None:
    drafter = NgramDrafter(draft_max=4)
    drafter.sync([1, 2, 3, 4, 5, 6, 7, 1, 2])
    assert drafter.lookup(3) == [4, 5, 6, 7]  # (1, 2, 3) was followed by 4, 5, 6, 7
    assert drafter.lookup(9) == [] and list(drafter.outcomes) == [0]  # never seen: none right
    drafter.sync([1, 2, 3, 4, 5, 6, 7, 1, 2, 3, 4, 5])  # 3 sampled, then 4 and 5 as looked up
    assert list(drafter.outcomes) == [0]  # 6 and 7 not generated yet
    drafter.sync([1, 2, 3, 4, 5, 6, 7, 1, 2, 3, 4, 5, 8])
    assert list(drafter.outcomes) == [0, 2]  # 4 and 5 right, then 8 where 6 was looked up


def _held(outcomes: list[int], length: int, steps: int = 48) -> list[int]:
    """The lengths a slot holding ``length`` chooses step after step while its lookups keep having
    ``outcomes`` right, with the H200's costs."""
    hold = HeldLength()
    hold.length = length
    out = []
    for _ in range(steps):
        price = h200_price(1, last=1 + hold.length)
        reach = reach_of(outcomes, 16)
        assert reach is not None
        out.append(hold.choose(reach, price))
    return out


def test_where_a_size_change_costs_several_steps_the_guess_length_is_held() -> None:
    assert h200_price(1, last=1).holds_size
    # A change that pays even spread over the steps it is expected to hold is made at once: the reply
    # copies its prompt (every lookup had 16 right), or has stopped (none right).
    assert _held([16] * 16, 0)[0] in (7, 16)  # 8 tokens in 1.65 ms or 17 in 3.6
    assert set(_held([0] * 16, 7)) == {0}  # 8 tokens a step for 1: back to plain
    copying = [7] * 12 + [16] * 4  # mostly 7 right: the longest length within the cheap sizes
    assert set(_held(copying, 7)) == {7}
    assert _held(copying, 0)[0] == 7
    assert _held([0] * 12 + [7] * 4, 0)[0] == 7  # the newest steps count most
    assert set(_held([0] * 16, 0)) == {0}
    # A small gain (a token right at the newest two steps only) is not worth a change until it lasts.
    assert _held([0] * 14 + [1, 1], 0)[:32] == [0] * 32
    # A small loss that lasts: one token guessed where none is right makes each step 0.18 ms longer for
    # nothing, and a change back costs 6 ms. Held until the loss adds up to that (before, the length was
    # held for good: 70 steps of free text in a simulated edit reply).
    lengths = _held([0] * 16, 1)
    assert lengths[:20] == [1] * 20 and lengths[-1] == 0, lengths
    # Old matches fade, and a length no longer right is left once its loss pays for the change.
    assert _held([3, 2] + [0] * 14, 7)[-1] == 0
    assert _held([0] * 14 + [1, 1], 7)[-1] < 7


def _replayed(prompt: list[int], reply: list[int], price: StepPrice = CPU) -> list[int]:
    """The guess lengths one slot's drafter chooses, step by step, generating ``reply`` to ``prompt``
    (sampling keeps the guessed tokens that ``reply`` has next)."""
    drafter, held, at, lengths = NgramDrafter(draft_max=16), list(prompt), 0, []
    while at < len(reply) - 1:
        drafter.sync(held)
        guess = drafter.draft(reply[at], room=16, price=price)
        kept = common_prefix(guess, reply[at + 1 :])
        if guess:
            drafter.feedback(len(guess), kept)
        lengths.append(len(guess))
        held += [reply[at], *guess[:kept]]
        at += 1 + kept
    return lengths


def test_on_a_cpu_a_reply_that_copies_its_prompt_is_guessed_from_its_first_lookups() -> None:
    """Where a guessed token costs half a step, guesses kept one time in two do not pay
    (``best_length``). How far each lookup was right is known whether it was guessed or not, so a slot
    guesses as soon as its lookups show that the reply copies. Priced by the guesses' own record alone,
    it made none until a probe 32 lookups in: a 100-token copy went mostly plain."""
    assert best_length(0.5, CPU, 16) == 0
    prompt = list(range(100, 200))
    lengths = _replayed(prompt, prompt)
    assert lengths[:6] == [0, 0, 0, 4, 8, 16], lengths  # the cap doubles from FIRST_DRAFT
    assert len(lengths) <= 12
    # Lookups that find tokens but are wrong from the first: nothing guessed, and no probes.
    phrase = [7, 8, 9]
    prompt = [token for n in range(40) for token in (*phrase, 300 + n)]
    reply = [token for n in range(40) for token in (*phrase, 400 + n)]
    assert set(_replayed(prompt, reply)) == {0}


def test_a_lookup_still_being_checked_counts_as_right_as_far_as_it_is_known() -> None:
    # Three lookups still being checked, right so far (the oldest furthest): a copy under way.
    assert censored_reach([(2, True), (1, True), (0, True)], 4) == [1.0] * 5
    # Counted as outcomes, the same lookups read as a copy about to end: the newest had none right, and
    # none had a third token right.
    reach = reach_of([2, 1, 0], 4)
    assert reach is not None and reach[1] < 0.6 and reach[3] == 0
    # Two lookups wrong at their third token, and the newest still right after five: the third token is
    # right about four times in ten (the newest weighs most), and the chance holds past what is known.
    reach = censored_reach([(2, False), (2, False), (5, True)], 6)
    assert reach is not None
    assert reach[:3] == [1.0, 1.0, 1.0] and reach[3] == pytest.approx(1 / 2.44) and reach[6] == reach[3]
    assert censored_reach([], 4) is None


def test_on_a_cpu_a_size_change_is_cheap_and_each_step_decides_alone() -> None:
    """On a CPU a change costs little beside the step: each step decides for itself (best_length)."""
    cpu = StepCost()
    for _ in range(StepCost.TRUSTED):
        for tokens in (1, 2, 5):
            cpu.add(tokens, 0.016 * tokens)
            cpu.add(tokens, 0.017 * tokens, run=1)
    price = cpu.price(1, 1)
    assert price is not None and not price.holds_size
    for _ in range(StepCost.TRUSTED):  # one size's steps after changes caught by pauses: not decisive
        cpu.add(3, 0.048)
        cpu.add(3, 0.150, run=1)
    assert not cpu.changes_cost()


def test_a_length_only_seen_right_after_changes_is_priced_from_them() -> None:
    """On a GPU a guess length is first stepped at right after a size change: its time at a held size
    is read from the single-token step's, scaled as the two compare after a change."""
    cost = StepCost()
    for _ in range(StepCost.TRUSTED):
        cost.add(1, 0.0011)
        cost.add(1, 0.0046, run=1)
        cost.add(5, 0.0059, run=1)
    assert cost.seconds(5) == pytest.approx(0.0011 * 5.9 / 4.6)
    assert cost.after_change(5) == pytest.approx(0.0059)
    assert cost.changed_table() == {1: 0.0046, 5: 0.0059}


def test_the_step_that_captures_a_cuda_graph_is_not_taken_for_a_held_size() -> None:
    """llama.cpp's CUDA backend captures a new shape's graph only at its second step, which is slow too
    (on the H200 3.6 ms where a held step takes 1.1-1.6). Counted as held, it made guesses of every size
    look three times dearer than they are: the engine there guessed at 32 of 234 steps and ran 0.85x
    plain. Its time goes into a change's cost instead."""
    cost = StepCost()
    for _ in range(StepCost.TRUSTED):  # each size held for 3 steps, then another
        for size in (1, 2, 5):
            for run in (1, 2, 3):
                cost.add(size, H200.ms(size, run) / 1000, run)
    for size in (2, 5):
        assert cost.seconds(size) == pytest.approx(H200.held[size] / 1000)
        extra = H200.changed[size] + H200.capture_ms - 2 * H200.held[size]
        price = cost.price(1, last=1)
        assert price is not None and price.switch(size) == pytest.approx(extra / 1000)
    assert cost.changes_cost()


def _copy_with(model: Any, cost: StepCost) -> tuple[bool, int, int, int, list[int]]:
    """The COPY reply, guessed with ``cost`` standing in for this machine's step times: whether it is
    plain decoding's, plain decoding's steps, the steps with guesses, the guessed tokens kept, and each
    step's size."""
    greedy = SamplingParams(temperature=0.0)
    plain, plain_steps, _ = _generate(model, 0, [COPY], greedy)
    engine = BatchingEngine(model, draft_max=16)
    engine.step_cost = cost
    with step_sizes(model) as sizes:
        guessed, steps, kept = _generate(model, 16, [COPY], greedy, engine=engine)
    return guessed == plain, plain_steps, steps, kept, sizes


def test_with_a_gpus_size_changes_the_guessing_steps_keep_one_size(model: Any) -> None:
    """With the H200's costs a reply that copies its prompt settles on one step size after trying a few
    (each tried is then measured) instead of changing it at nearly every step, and takes the H200 well
    under plain decoding's time; the reply is plain decoding's."""
    same, plain_steps, steps, _, sizes = _copy_with(model, Charged(H200))
    assert same
    changes = sum(1 for a, b in itertools.pairwise(sizes[1:]) if a != b)
    assert changes <= 4 and steps < plain_steps * 0.6, sizes
    assert sum(H200.each_ms(sizes[1:])) < 0.6 * sum(H200.each_ms([1] * plain_steps)), sizes


def test_two_slots_holding_guess_lengths_give_plain_decodings_replies(model: Any) -> None:
    """With the H200's costs, a copying reply and a free one side by side: the guesses made while the
    engine learns those costs, and those of the reply left alone (padded to the length it holds, once
    the steps after size changes are seen to cost), change neither reply, greedy or seeded."""
    for sampling in (SamplingParams(temperature=0.0), SamplingParams(temperature=0.8, seed=7)):
        plain, _, _ = _generate(model, 0, [COPY, POEM], sampling, max_tokens=100)
        engine = BatchingEngine(model, draft_max=16)
        engine.step_cost = Charged(H200)
        model.forget()
        guessing = replace(sampling, draft_max=16)  # a seeded request's own bound (else it runs plain)
        guessed, _, kept = _generate(model, 16, [COPY, POEM], guessing, max_tokens=100, engine=engine)
        assert guessed == plain and kept > 10
        assert engine.step_cost.changes_cost()


def test_with_a_gpus_size_changes_two_streams_do_not_guess(model: Any) -> None:
    """Where a size change costs several steps, steps of several streams make no guesses (each slot's
    would change the size of a step that holds them all); the stream left alone guesses again. The
    replies are plain decoding's."""
    greedy = SamplingParams(temperature=0.0)
    plain, _, _ = _generate(model, 0, [POEM, COPY], greedy, max_tokens=150)
    engine = BatchingEngine(model, draft_max=16)
    engine.step_cost = learned(H200, Charged(H200))  # charged and already learned
    assert engine.step_cost.costly()
    model.forget()
    with step_sizes(model) as sizes:
        guessed, _, kept = _generate(model, 16, [POEM, COPY], greedy, max_tokens=150, engine=engine)
    assert guessed == plain
    alone = sizes.index(1) if 1 in sizes else len(sizes)  # the first step of one stream
    assert alone > 20 and set(sizes[1:alone]) == {2}, sizes
    assert kept > 10 and max(sizes[alone:]) > 1, sizes


def test_a_request_after_a_fitted_one_reads_its_prompt() -> None:
    """A later request's first step reads only its prompt (no slot generating) once steps are fitted."""
    with embedded_llama(n_ctx=2048, n_seq_max=1) as loaded:
        engine = BatchingEngine(loaded, draft_max=16)
        greedy = SamplingParams(temperature=0.0)
        first, _, _ = _generate(loaded, 16, [COPY], greedy, max_tokens=120, engine=engine)
        assert engine.step_cost.price(1) is not None
        second, _, _ = _generate(loaded, 16, [COPY], greedy, max_tokens=120, engine=engine)
        assert second == first


def test_the_tokens_a_step_keeps_reach_the_stream_as_one_delta(model: Any) -> None:
    """Kept guesses go to the event loop together, their text joined (JobStream.hold): a chunk per step
    for the client, not one per token, and the same text."""
    greedy = SamplingParams(temperature=0.0)
    plain, _, _ = _generate(model, 0, [COPY], greedy)
    loop = asyncio.new_event_loop()
    try:
        engine = BatchingEngine(model, draft_max=16)
        model.forget()
        stream = JobStream(loop)
        prompt = model.tokenize(COPY, add_special=True, parse_special=True)
        engine.start(GenerationJob(stream, prompt, greedy, 120))
        steps = 0
        while engine.active:
            engine.step()
            steps += 1

        async def read() -> list[Any]:
            return [event async for event in stream]

        events = loop.run_until_complete(read())
    finally:
        loop.close()
    deltas = [e for e in events if isinstance(e, TextDelta)]
    finished = events[-1]
    assert isinstance(finished, Finished)
    assert "".join(d.text for d in deltas) == plain[0]
    assert len(deltas) <= steps < finished.usage.completion_tokens * 0.6, (len(deltas), steps)


class H200Steps(StepCost):
    """The step times an H200 gave for the default model (docs/BENCHMARKS.md), in place of this
    machine's: the engine's decisions there, with the real model and its real guesses here."""

    MS = {1: 1.03, 2: 1.20, 3: 1.41, 4: 1.47, 5: 1.52, 7: 1.61, 8: 1.70, 9: 3.10, 13: 3.39, 17: 3.73}

    def seconds(self, tokens: int) -> float | None:
        return StepTimes.line(self.MS, tokens) / 1000


def test_with_a_gpus_step_times_guesses_stay_under_the_slow_size_and_halve_the_steps(model: Any) -> None:
    same, plain_steps, steps, kept, sizes = _copy_with(model, H200Steps())
    assert same
    assert steps < plain_steps * 0.6 and kept > 30, (plain_steps, steps, kept)
    assert max(sizes[1:]) <= 8, sizes  # past the prompt, no step of 9 or more (twice as long there)
