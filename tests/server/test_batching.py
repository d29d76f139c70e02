"""Continuous batching: several requests at once give the same answers as one at a time."""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Iterator

import pytest

from tests import web
from tests.server.conftest import MODEL_ID, NO_EOS_BIAS, Daemon, start_daemon, stop_daemon


@pytest.fixture(scope="module")
def batching_daemon(daemon: Daemon) -> Daemon:
    """The session's daemon: the planner gives it four slots of 4096 tokens on a machine with 1 GiB
    free (`--parallel 4` would start another daemon with the same plan)."""
    return daemon


def _chat(daemon: Daemon, content: str, max_tokens: int = 48, **extra: object) -> dict[str, object]:
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
            "temperature": 0, **extra}  # fmt: skip
    response = web.post(f"{daemon.v1}/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _stream_text(daemon: Daemon, content: str, max_tokens: int) -> str:
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "logit_bias": NO_EOS_BIAS}  # fmt: skip
    parts = []
    with web.stream("POST", f"{daemon.v1}/chat/completions", json=body, timeout=120) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                choices = json.loads(line[6:])["choices"]
                if choices:
                    parts.append(choices[0]["delta"].get("content") or "")
    return "".join(parts)


def test_slots_are_reported(batching_daemon: Daemon) -> None:
    model = web.get(f"{batching_daemon.url}/health").json()["models"][0]
    assert model["slots_total"] == 4 and model["n_ctx_per_slot"] == 4096


@pytest.fixture(scope="module")
def unguessed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A daemon without speculative decoding. Greedy output is the same one at a time and batched only as
    long as llama.cpp's kernels give the same logits whatever the batch's size; guesses make batches of
    up to 17 tokens a slot, where the CPU's matrix code changes path and a near tie can go the other way
    (seen once in a full run). Guessing itself is checked against plain decoding in
    tests/unit/test_speculation.py."""
    daemon = start_daemon(tmp_path_factory.mktemp("unguessed"), env={"APPLIANCE_MODEL__DRAFT_MAX": "0"})
    yield daemon
    stop_daemon(daemon)


def test_eight_concurrent_streams_match_one_at_a_time(unguessed: Daemon) -> None:
    prompts = [f"Write about subject number {i}." for i in range(8)]
    alone = [_stream_text(unguessed, p, 24) for p in prompts]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda p: _stream_text(unguessed, p, 24), prompts))
    assert together == alone
    assert all(text for text in alone)


def test_prefix_reuse_gives_identical_output(batching_daemon: Daemon) -> None:
    question = "Name three things found in the sea, and describe each one briefly."
    first = _chat(batching_daemon, question)
    again = _chat(batching_daemon, question)
    assert again["choices"][0]["message"]["content"] == first["choices"][0]["message"]["content"]  # type: ignore[index]
    cached = again["usage"]["prompt_tokens_details"]["cached_tokens"]  # type: ignore[index]
    assert cached == again["usage"]["prompt_tokens"] - 1  # type: ignore[index]


def _prompt_cache_hits(daemon: Daemon) -> float:
    for line in web.get(f"{daemon.url}/metrics").text.splitlines():
        if line.startswith(f'appliance_prompt_cache_hits_total{{model="{MODEL_ID}"}}'):
            return float(line.split()[-1])
    raise AssertionError("no appliance_prompt_cache_hits_total for the model")


def test_a_conversation_finds_its_prefix_after_others_took_every_slot(batching_daemon: Daemon) -> None:
    """Five conversations, one after another, on four slots: the first one's slot goes to the fifth, its
    prefix to host memory, and its next turn copies it back instead of reading it again."""

    def turn(topic: str, question: str) -> dict[str, object]:
        system = {"role": "system", "content": f"You answer questions about {topic}, in one sentence. " * 8}
        body = {"model": MODEL_ID, "messages": [system, {"role": "user", "content": question}],
                "max_tokens": 4, "temperature": 0}  # fmt: skip
        response = web.post(f"{batching_daemon.v1}/chat/completions", json=body, timeout=120)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    hits = _prompt_cache_hits(batching_daemon)
    turn("lighthouses", "Who keeps them?")
    for topic in ("glaciers", "orchards", "violins", "comets"):  # each takes the least recently used slot
        turn(topic, "Why?")
    again = turn("lighthouses", "How tall are they?")
    usage = again["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] > 100  # type: ignore[index]
    assert _prompt_cache_hits(batching_daemon) == hits + 1
    cache = web.get(f"{batching_daemon.url}/appliance/v1/status").json()["models"][0]["prompt_cache"]
    assert cache["hits"] == hits + 1 and 0 < cache["bytes"] <= cache["limit_bytes"] and cache["prefixes"] >= 1


def test_long_prompt_does_not_freeze_a_stream(batching_daemon: Daemon) -> None:
    """A 1900-token prompt read while another request generates (in one step with its next token: n_batch
    2048; llama.cpp runs it 512 tokens at a time): both finish correctly."""
    long_text = "The tide comes in and the tide goes out along the quiet harbour. " * 125
    alone = _chat(batching_daemon, "Count to ten.", max_tokens=24)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        big = pool.submit(_chat, batching_daemon, long_text, 8)
        time.sleep(0.05)
        small = pool.submit(_chat, batching_daemon, "Count to ten.", 24)
        assert small.result()["choices"][0]["message"]["content"] == alone["choices"][0]["message"]["content"]  # type: ignore[index]
        assert big.result()["usage"]["prompt_tokens"] > 1536  # type: ignore[index]


def test_disconnect_frees_the_slot(batching_daemon: Daemon) -> None:
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Go on."}], "max_tokens": 3500,
            "stream": True, "logit_bias": NO_EOS_BIAS}  # fmt: skip
    with web.stream("POST", f"{batching_daemon.v1}/chat/completions", json=body, timeout=60) as response:
        for i, _ in enumerate(response.iter_lines()):
            if i > 6:
                break
    deadline = time.monotonic() + 10
    while web.get(f"{batching_daemon.url}/health").json()["models"][0]["slots_busy"]:
        assert time.monotonic() < deadline, "the abandoned request still holds its slot"
        time.sleep(0.05)


def test_deadline_cuts_generation_with_length(tmp_path_factory: pytest.TempPathFactory) -> None:
    daemon = start_daemon(
        tmp_path_factory.mktemp("deadline"), env={"APPLIANCE_SERVER__REQUEST_DEADLINE_S": "0.5"}
    )
    try:
        reply = _chat(daemon, "Go on.", max_tokens=3000, logit_bias=NO_EOS_BIAS)
        assert reply["choices"][0]["finish_reason"] == "length"  # type: ignore[index]
        assert 0 < reply["usage"]["completion_tokens"] < 3000  # type: ignore[index]
    finally:
        stop_daemon(daemon)
