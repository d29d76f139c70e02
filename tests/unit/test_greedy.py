"""Greedy decoding picked in numpy (sampler.Greedy) rather than by llama_sampler_sample: the same token at
every step, with the end-of-text ban of ignore_eos and a client's logit_bias, and only for chains that
are greedy decoding and biases alone."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import llama_cpp
import pytest

from appliance.engine.params import SamplingParams
from tests.embedded_llama import embedded_llama


@pytest.fixture(scope="module")
def model() -> Iterator[Any]:
    with embedded_llama(n_ctx=1024, n_seq_max=1) as loaded:
        yield loaded


PROMPT = "<|im_start|>user\nWrite two sentences about the sea.<|im_end|>\n<|im_start|>assistant\n"


def steps(model: Any, params: SamplingParams, n: int = 40) -> list[tuple[int, int]]:
    """(numpy's pick, llama.cpp's pick) at each of ``n`` steps of greedy decoding (llama.cpp's token is
    the one decoded next)."""
    model.forget()
    sampler = model.new_sampler(params)
    reference = model.new_sampler(params)
    assert sampler.greedy is not None
    picks = []
    try:
        index = model.decode([(0, model.tokenize(PROMPT, add_special=True, parse_special=True), 1)])[0]
        for _ in range(n):
            ours = sampler.greedy.pick(llama_cpp.llama_get_logits_ith(model._ctx, index))
            theirs = int(llama_cpp.llama_sampler_sample(reference.chain, model._ctx, index))
            picks.append((ours, theirs))
            index = model.decode([(0, [theirs], 1)])[0]
    finally:
        model.free_sampler(sampler)
        model.free_sampler(reference)
    return picks


def test_the_same_token_as_llama_cpp_at_every_step(model: Any) -> None:
    picks = steps(model, SamplingParams(temperature=0.0))
    assert all(ours == theirs for ours, theirs in picks)
    assert len({theirs for _, theirs in picks}) > 10  # a real reply, not one token over and over


def test_biases_count_as_llama_cpp_adds_them(model: Any) -> None:
    """ignore_eos bans the end-of-text tokens (-inf); a client's biases move the choice: the reply's
    first token banned, another pushed up by a finite bias."""
    first = steps(model, SamplingParams(temperature=0.0), n=1)[0][1]
    banned = steps(model, SamplingParams(temperature=0.0, ignore_eos=True, logit_bias={first: -100.0}), n=20)
    assert all(ours == theirs for ours, theirs in banned) and banned[0][1] != first
    pushed = steps(model, SamplingParams(temperature=0.0, logit_bias={first: -3.0, 42: 8.5}), n=20)
    assert all(ours == theirs for ours, theirs in pushed)


def test_only_chains_that_are_greedy_and_biases(model: Any) -> None:
    def greedy(**kwargs: Any) -> bool:
        sampler = model.new_sampler(SamplingParams(**kwargs))
        try:
            return sampler.greedy is not None
        finally:
            model.free_sampler(sampler)

    assert greedy(temperature=0.0) and greedy(temperature=0.0, ignore_eos=True)
    assert not greedy(temperature=0.7)
    assert not greedy(temperature=0.0, repeat_penalty=1.2)  # penalties keep state: llama.cpp's chain
    assert not greedy(temperature=0.0, grammar='root ::= "yes" | "no"')  # checked by the grammar path
    assert greedy(temperature=0.0, grammar='root ::= "x"', grammar_triggers=("<tool_call>",))
