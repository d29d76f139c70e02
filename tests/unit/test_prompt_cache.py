"""The host-memory prompt cache: what it keeps and drops, and, with the embedded model in one slot,
a conversation pushed out of its slot by another finds its prefix again, with the same reply."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from appliance.backend import Finished, TextDelta, Usage
from appliance.config import ModelSettings
from appliance.engine.batching import BatchingEngine
from appliance.engine.jobs import DONE, GenerationJob, JobStream
from appliance.engine.params import SamplingParams
from appliance.engine.prompt_cache import PromptCache
from tests.embedded_llama import embedded_llama


def test_a_longer_prefix_replaces_the_kept_ones_it_starts_with() -> None:
    cache = PromptCache(1000, min_tokens=2)
    cache.put([1, 2, 3], b"x" * 100)
    cache.put([5, 6, 7], b"y" * 100)
    assert not cache.wants([1, 2], 10)  # held already, inside [1, 2, 3]
    assert cache.wants([1, 2, 4], 10)
    cache.put([1, 2, 3, 4], b"z" * 150)
    assert len(cache) == 2 and cache.size == 250
    kept, n = cache.best([1, 2, 3, 9])
    assert kept is not None and kept.tokens == [1, 2, 3, 4] and n == 3
    assert cache.best([8, 1, 2]) == (None, 0)


def test_bounded_in_bytes_least_recently_used_first_out() -> None:
    cache = PromptCache(300, min_tokens=2)
    cache.put([1, 1], b"a" * 100)
    cache.put([2, 2], b"b" * 100)
    cache.put([3, 3], b"c" * 100)
    kept, _ = cache.best([1, 1, 5])
    assert kept is not None
    cache.used(kept, 2)  # [1, 1] is now the most recently used: [2, 2] goes first
    cache.put([4, 4], b"d" * 100)
    assert [k.tokens for k in cache._kept] == [[3, 3], [1, 1], [4, 4]] and cache.size == 300
    assert not cache.wants([9] * 3, 301)  # larger than the whole bound
    assert not cache.wants([9], 1)  # shorter than min_tokens: read again faster than copied


def test_the_auto_bound_is_a_sixteenth_of_ram_at_most_8_gib() -> None:
    assert ModelSettings().prompt_cache_bytes(24 << 30) == 24 << 26
    assert ModelSettings().prompt_cache_bytes(512 << 30) == 8 << 30
    assert ModelSettings(prompt_cache="0").prompt_cache_bytes(24 << 30) == 0
    assert ModelSettings(prompt_cache="256MiB").prompt_cache_bytes(4 << 30) == 256 << 20
    with pytest.raises(ValueError, match="not a size"):
        ModelSettings(prompt_cache="lots")


@pytest.fixture(scope="module")
def model() -> Iterator[Any]:
    with embedded_llama(n_ctx=2048, n_seq_max=1) as loaded:
        yield loaded


SYSTEM = "You are a careful assistant who answers questions about the history of the river towns. " * 6
AGENT = f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nWhere was the first bridge?<|im_end|>\n"
OTHER = "<|im_start|>user\nName three colours of the rainbow, and say which is your favourite.<|im_end|>\n"
ASSISTANT = "<|im_start|>assistant\n"


def _run(model: Any, engine: BatchingEngine, prompt: str) -> tuple[str, Usage]:
    """One greedy request through ``engine``: its reply and usage."""
    loop = asyncio.new_event_loop()
    stream = JobStream(loop)
    tokens = model.tokenize(prompt, add_special=True, parse_special=True)
    engine.start(GenerationJob(stream, tokens, SamplingParams(temperature=0.0), 24))
    while engine.active:
        engine.step()

    async def read() -> tuple[str, Usage]:
        parts, usage = [], None
        while (item := await stream._events.get()) is not DONE:
            if isinstance(item, TextDelta):
                parts.append(item.text)
            else:
                assert isinstance(item, Finished), item
                usage = item.usage
        assert usage is not None
        return "".join(parts), usage

    try:
        return loop.run_until_complete(read())
    finally:
        loop.close()


@pytest.mark.parametrize("kept", [True, False])
def test_a_conversation_pushed_out_of_its_slot_finds_its_prefix_again(model: Any, kept: bool) -> None:
    model.forget()
    cache = PromptCache(64 << 20) if kept else None
    engine = BatchingEngine(model, prompt_cache=cache)
    first, usage = _run(model, engine, AGENT + ASSISTANT)
    assert usage.cached_tokens == 0
    _run(model, engine, OTHER + ASSISTANT)  # takes the one slot
    # The agent's next turn: its history, then a new question.
    again, usage = _run(
        model, engine, AGENT + ASSISTANT + first + "<|im_end|>\n<|im_start|>user\nWhy?<|im_end|>\n"
    )
    if kept:
        assert cache is not None and cache.hits == 1 and len(cache) >= 1
        # Everything before the new turn came from host memory (the reply's last token was sampled, not
        # decoded, so the shared part ends at the reply's text).
        assert usage.cached_tokens >= len(
            model.tokenize(AGENT + ASSISTANT, add_special=True, parse_special=True)
        )
    else:
        assert usage.cached_tokens < 5  # at most the first tokens of the chat template in common
    # The same reply as reading the whole prompt: the copied state is the state.
    model.forget()
    plain = BatchingEngine(model)
    repeat, _ = _run(
        model, plain, AGENT + ASSISTANT + first + "<|im_end|>\n<|im_start|>user\nWhy?<|im_end|>\n"
    )
    assert again == repeat


def test_a_slot_going_on_with_most_of_its_prefix_is_not_copied_out(model: Any) -> None:
    """The same agent's next task keeps most of the slot: nothing is copied out (it would cost every
    request time); another conversation taking the slot is what copies it out."""
    model.forget()
    cache = PromptCache(64 << 20)
    engine = BatchingEngine(model, prompt_cache=cache)
    _run(model, engine, AGENT + ASSISTANT)
    _run(model, engine, AGENT.replace("Where was the first bridge?", "Who built the mill?") + ASSISTANT)
    assert len(cache) == 0
    _run(model, engine, OTHER + ASSISTANT)
    assert len(cache) == 1 and cache.size > 0


def test_nothing_is_kept_where_the_machine_has_no_room_for_it() -> None:
    """The planner does not count the cache: it only takes memory the machine can still give."""
    room = [1000]
    cache = PromptCache(10_000, min_tokens=2, room=lambda: room[0])
    assert cache.wants([1, 2, 3], 900)
    room[0] = 800
    assert not cache.wants([1, 2, 3], 900)
