"""appliance/engine/budget.py: a generation's token budget within one slot's context, and its sampling
fitted to the context and vocabulary, as tables of plain inputs."""

from __future__ import annotations

import pytest

from appliance.engine.budget import fitted_sampling, generation_budget
from appliance.engine.params import SamplingParams
from appliance.errors import ContextOverflow, InvalidRequest

# (prompt tokens, max_tokens, n_ctx per slot, server cap) -> the budget
FITS = [
    pytest.param(10, 5, 100, None, 5, id="asked-for-fits"),
    pytest.param(10, 90, 100, None, 90, id="fills-the-slot-exactly"),
    pytest.param(10, None, 100, None, 90, id="none-means-the-rest-of-the-slot"),
    pytest.param(99, None, 100, None, 1, id="none-with-one-cell-left"),
    pytest.param(10, None, 100, 20, 20, id="none-means-the-cap-when-smaller"),
    pytest.param(10, None, 100, 200, 90, id="none-means-the-slot-when-the-cap-is-larger"),
    pytest.param(10, 20, 100, 20, 20, id="exactly-the-cap"),
    pytest.param(1, 1, 2, 1, 1, id="smallest-slot"),
]


@pytest.mark.parametrize(("prompt_tokens", "max_tokens", "n_ctx", "cap", "expected"), FITS)
def test_the_budget_of_a_request_that_fits(
    prompt_tokens: int, max_tokens: int | None, n_ctx: int, cap: int | None, expected: int
) -> None:
    assert generation_budget(prompt_tokens, max_tokens, n_ctx, cap) == expected


# (prompt tokens, max_tokens, n_ctx per slot, server cap) -> (error, its param, words its message holds)
REFUSED = [
    pytest.param(0, 5, 100, None, InvalidRequest, "prompt", "the prompt is empty", id="empty-prompt"),
    pytest.param(
        0, None, 100, None, InvalidRequest, "prompt", "the prompt is empty", id="empty-prompt-before-budget"
    ),
    pytest.param(
        10, 21, 100, 20, InvalidRequest, "max_tokens", "at most 20 tokens a request", id="over-the-cap"
    ),
    pytest.param(
        10, 500, 100, 20, InvalidRequest, "max_tokens", "(server.max_tokens_cap)", id="cap-checked-before-fit"
    ),
    pytest.param(
        10,
        91,
        100,
        None,
        ContextOverflow,
        "messages",
        "10 tokens and 91 more were requested (101 in all)",
        id="one-token-over",
    ),
    pytest.param(
        95, 20, 100, 20, ContextOverflow, "messages", "(115 in all)", id="within-the-cap-but-not-the-slot"
    ),
    pytest.param(
        100,
        None,
        100,
        None,
        ContextOverflow,
        "messages",
        "which leaves none to generate",
        id="none-full-slot",
    ),
    pytest.param(
        150,
        None,
        100,
        20,
        ContextOverflow,
        "messages",
        "the prompt has 150 tokens",
        id="none-prompt-too-long",
    ),
    pytest.param(10, 0, 100, None, ContextOverflow, "messages", "0 more were requested", id="zero-tokens"),
    pytest.param(10, -1, 100, None, ContextOverflow, "messages", "-1 more were requested", id="negative"),
]


@pytest.mark.parametrize(("prompt_tokens", "max_tokens", "n_ctx", "cap", "error", "param", "words"), REFUSED)
def test_a_request_that_does_not_fit_is_refused_with_a_clear_error(
    prompt_tokens: int,
    max_tokens: int | None,
    n_ctx: int,
    cap: int | None,
    error: type[InvalidRequest],
    param: str,
    words: str,
) -> None:
    with pytest.raises(InvalidRequest) as raised:
        generation_budget(prompt_tokens, max_tokens, n_ctx, cap)
    assert type(raised.value) is error
    assert raised.value.param == param
    assert words in raised.value.message
    if error is ContextOverflow:
        assert f"maximum context length is {n_ctx} tokens" in raised.value.message


# (sampling, grammar, n_ctx per slot, vocabulary size) -> the sampling the request runs with
FITTED = [
    pytest.param(SamplingParams(), None, 100, 1000, SamplingParams(), id="defaults-unchanged"),
    pytest.param(
        SamplingParams(), "root ::= [a]", 100, 1000, SamplingParams(grammar="root ::= [a]"), id="grammar"
    ),
    pytest.param(
        SamplingParams(repeat_last_n=-1), None, 100, 1000, SamplingParams(repeat_last_n=100), id="minus-one"
    ),
    pytest.param(
        SamplingParams(repeat_last_n=0), None, 100, 1000, SamplingParams(repeat_last_n=0), id="zero-stays"
    ),
    pytest.param(
        SamplingParams(repeat_last_n=100), None, 100, 1000, SamplingParams(repeat_last_n=100), id="slot"
    ),
    pytest.param(
        SamplingParams(repeat_last_n=101), None, 100, 1000, SamplingParams(repeat_last_n=100), id="over"
    ),
    pytest.param(
        SamplingParams(repeat_last_n=2**31),
        None,
        100,
        1000,
        SamplingParams(repeat_last_n=100),
        id="huge-window",
    ),
    pytest.param(
        SamplingParams(logit_bias={0: -1.0, 999: 2.0}),
        None,
        100,
        1000,
        SamplingParams(logit_bias={0: -1.0, 999: 2.0}),
        id="bias-at-both-ends-of-the-vocabulary",
    ),
]


@pytest.mark.parametrize(("sampling", "grammar", "n_ctx", "n_vocab", "expected"), FITTED)
def test_sampling_is_fitted_to_the_slot(
    sampling: SamplingParams, grammar: str | None, n_ctx: int, n_vocab: int, expected: SamplingParams
) -> None:
    assert fitted_sampling(sampling, grammar, n_ctx, n_vocab) == expected


@pytest.mark.parametrize("token", [1000, -1, 2**32 + 5], ids=["vocabulary-size", "negative", "past-a-c-int"])
def test_a_logit_bias_outside_the_vocabulary_is_refused(token: int) -> None:
    with pytest.raises(InvalidRequest) as raised:
        fitted_sampling(SamplingParams(logit_bias={token: 1.0}), None, 100, 1000)
    assert raised.value.param == "logit_bias"
    assert "outside the vocabulary" in raised.value.message


def test_a_requests_own_smaller_context_bounds_it_and_says_num_ctx() -> None:
    assert generation_budget(30, None, 1024, None, context_tokens=64) == 34
    assert generation_budget(30, None, 1024, None, context_tokens=4096) == 994  # the slot's is the bound
    with pytest.raises(ContextOverflow) as raised:
        generation_budget(70, None, 1024, None, context_tokens=64)
    assert "this request's context (num_ctx) is 64 tokens" in raised.value.message
    with pytest.raises(ContextOverflow):
        generation_budget(30, 40, 1024, None, context_tokens=64)
