"""Tool calls as every dialect streams them, from the seam's ToolCallDelta (a call's id and name, then
its argument text) or, from a backend that gives them only whole, from Finished: each writer is fed a
real event sequence and read back with the official clients' own parsers (openai's stream state,
anthropic's event accumulator, ollama's response models), which must rebuild the calls the whole
answer carries."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import ollama
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from appliance.backend import Event, Finished, TextDelta, ToolCall, ToolCallDelta, Usage
from server import anthropic_stream, ollama_routes, openai_payloads

CALLS = (
    ToolCall("call_a", "get_weather", '{"city": "Paris", "unit": "celsius"}'),
    ToolCall("call_b", "get_time", '{"tz": "Europe/Paris"}'),
)


def _sequence(calls: int, streamed: bool, text: str = "") -> list[Event]:
    """A reply with ``text`` first, then ``calls`` calls: as deltas (the arguments cut in three, the
    first piece in the middle of a string) then Finished with them whole, or only whole in Finished."""
    events: list[Event] = [TextDelta(text)] if text else []
    for index, call in enumerate(CALLS[:calls]):
        if streamed:
            cuts = (0, 5, 14, len(call.arguments))
            events.append(ToolCallDelta(index, call.id, call.name))
            events += [
                ToolCallDelta(index, arguments=call.arguments[a:b]) for a, b in itertools.pairwise(cuts)
            ]
    return [*events, Finished("tool_calls", Usage(11, 23), CALLS[:calls])]


SEQUENCES = [
    pytest.param(calls, streamed, text, id=f"{calls}-{'streamed' if streamed else 'whole'}-{bool(text)}")
    for calls in (1, 2)
    for streamed in (True, False)
    for text in ("", "Let me look. ")
]


async def _events(sequence: list[Event], pause_s: float = 0.0) -> AsyncIterator[Event]:
    for event in sequence:
        if pause_s:
            await asyncio.sleep(pause_s)
        yield event


def _run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def _all(items: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in items]


def _openai_chunks(sequence: list[Event]) -> list[dict[str, Any]]:
    meta = openai_payloads.Meta("chatcmpl-1", 0, "m")
    chunks = openai_payloads.chat_chunks(_events(sequence), meta, logprobs=False, include_usage=True)
    return list(_run(_all(chunks)))


@pytest.mark.parametrize(("calls", "streamed", "text"), SEQUENCES)
def test_openai_s_stream_rebuilds_the_whole_answer_s_calls(calls: int, streamed: bool, text: str) -> None:
    sequence = _sequence(calls, streamed, text)
    meta = openai_payloads.Meta("chatcmpl-1", 0, "m")
    collected = _run(openai_payloads.collect(_events(sequence)))
    whole = ChatCompletion.model_validate(openai_payloads.chat_completion(collected, meta, logprobs=False))
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for chunk in _openai_chunks(sequence):
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    final = state.get_final_completion().choices[0]
    rebuilt = [(c.id, c.function.name, c.function.arguments) for c in final.message.tool_calls or []]
    answered = whole.choices[0].message.tool_calls or []
    expected = [(c.id, c.function.name, c.function.arguments) for c in answered]  # type: ignore[union-attr]
    assert rebuilt == expected == [(c.id, c.name, c.arguments) for c in CALLS[:calls]]
    assert (final.message.content or "", final.finish_reason) == (text, "tool_calls")


def test_openai_streams_a_call_as_openai_does_and_never_repeats_it() -> None:
    pieces = [
        piece
        for chunk in _openai_chunks(_sequence(2, streamed=True, text="Let me look. "))
        for choice in chunk["choices"]
        for piece in choice["delta"].get("tool_calls", [])
    ]
    # Each call's first piece: index, id, type, name and empty arguments; then fragments alone.
    assert pieces[0] == {"index": 0, "id": "call_a", "type": "function",
                         "function": {"name": "get_weather", "arguments": ""}}  # fmt: skip
    assert pieces[1] == {"index": 0, "function": {"arguments": '{"cit'}}
    assert [p["index"] for p in pieces if "id" in p] == [0, 1]  # Finished's whole calls are not sent again
    assert "".join(p["function"]["arguments"] for p in pieces if p["index"] == 1) == CALLS[1].arguments


def test_openai_sends_calls_given_only_whole_in_one_chunk() -> None:
    chunks = _openai_chunks(_sequence(2, streamed=False))
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks if chunk["choices"]]
    with_calls = [delta["tool_calls"] for delta in deltas if "tool_calls" in delta]
    assert with_calls == [
        [{"index": i, "id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
         for i, c in enumerate(CALLS)]
    ]  # fmt: skip


REPLY = anthropic_stream.Reply("msg_1", "m")


def _anthropic_events(sequence: list[Event]) -> list[dict[str, Any]]:
    frames = _run(_all(anthropic_stream.events(REPLY, _events(sequence), lambda: None, None)))
    return [json.loads(f.decode().split("data: ", 1)[1]) for f in frames]


@pytest.mark.parametrize(("calls", "streamed", "text"), SEQUENCES)
def test_anthropic_s_stream_rebuilds_the_calls(calls: int, streamed: bool, text: str) -> None:
    sequence = _sequence(calls, streamed, text)
    snapshot: Any = None
    buffers: dict[int, bytes] = {}
    for event in _anthropic_events(sequence):
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=buffers)  # type: ignore[arg-type]
    uses = [(b.id, b.name, b.input) for b in snapshot.content if b.type == "tool_use"]
    blocks = anthropic_stream.message(REPLY, text, "", sequence[-1])["content"]  # type: ignore[arg-type]
    whole = [(b["id"], b["name"], b["input"]) for b in blocks if b["type"] == "tool_use"]
    assert uses == whole == [(c.id, c.name, json.loads(c.arguments)) for c in CALLS[:calls]]
    assert [b.type for b in snapshot.content] == ["text"] * bool(text) + ["tool_use"] * calls
    assert snapshot.stop_reason == "tool_use"


def test_anthropic_closes_the_text_block_and_streams_each_call_s_json() -> None:
    events = _anthropic_events(_sequence(2, streamed=True, text="Let me look. "))
    kinds = [(e["type"], e.get("index"), (e.get("content_block") or e.get("delta") or {}).get("type"))
             for e in events]  # fmt: skip
    assert kinds == [
        ("message_start", None, None),
        ("content_block_start", 0, "text"), ("content_block_delta", 0, "text_delta"),
        ("content_block_stop", 0, None),
        ("content_block_start", 1, "tool_use"), *[("content_block_delta", 1, "input_json_delta")] * 3,
        ("content_block_stop", 1, None),
        ("content_block_start", 2, "tool_use"), *[("content_block_delta", 2, "input_json_delta")] * 3,
        ("content_block_stop", 2, None),
        ("message_delta", None, None), ("message_stop", None, None),
    ]  # fmt: skip
    use = {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {}}
    assert events[4]["content_block"] == use


def _ollama(sequence: list[Event], stream: bool, pause_s: float = 0.0) -> list[dict[str, Any]]:
    async def lines() -> list[dict[str, Any]]:
        started = time.monotonic_ns()
        events = _events(sequence, pause_s)
        answer = await ollama_routes._answer(
            events, lambda: None, "m", stream=stream, chat=True, started=started
        )
        if not stream:
            return [json.loads(answer.body)]
        return [json.loads(line) async for line in answer.body_iterator]  # type: ignore[arg-type]

    return list(_run(lines()))


@pytest.mark.parametrize(("calls", "streamed", "text"), SEQUENCES)
def test_ollama_s_stream_carries_each_call_whole(calls: int, streamed: bool, text: str) -> None:
    sequence = _sequence(calls, streamed, text)
    whole = ollama.ChatResponse.model_validate(_ollama(sequence, stream=False)[0])
    lines = [ollama.ChatResponse.model_validate(line) for line in _ollama(sequence, stream=True)]
    streamed_calls = [call for line in lines for call in line.message.tool_calls or []]
    expected = [(c.name, json.loads(c.arguments)) for c in CALLS[:calls]]
    assert [(c.function.name, dict(c.function.arguments)) for c in streamed_calls] == expected
    assert [(c.function.name, dict(c.function.arguments)) for c in whole.message.tool_calls or []] == expected
    # One call a line, before the last line (done false); the last carries none; "stop", as Ollama says.
    assert [len(line.message.tool_calls or []) for line in lines if line.message.tool_calls] == [1] * calls
    assert lines[-1].done and not lines[-1].message.tool_calls and not any(line.done for line in lines[:-1])
    assert (lines[-1].done_reason, whole.done_reason) == ("stop", "stop")
    assert "".join(line.message.content or "" for line in lines) == text == whole.message.content


def test_ollama_sends_a_call_once_the_next_one_begins() -> None:
    sequence = _sequence(2, streamed=True)
    second_begins = next(i for i, e in enumerate(sequence) if isinstance(e, ToolCallDelta) and e.index == 1)

    async def lines_before_second_call() -> list[dict[str, Any]]:
        async def events() -> AsyncIterator[Event]:
            for event in sequence[: second_begins + 1]:
                yield event
            await asyncio.Event().wait()  # the model still writing the second call

        started = time.monotonic_ns()
        answer = await ollama_routes._answer(events(), lambda: None, "m", True, chat=True, started=started)
        got: list[dict[str, Any]] = []
        body = answer.body_iterator
        got.append(json.loads(await asyncio.wait_for(anext(body), 5)))  # type: ignore[arg-type]
        await body.aclose()  # type: ignore[attr-defined]
        return got

    first = _run(lines_before_second_call())[0]
    assert first["message"]["tool_calls"] == [
        {"function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}
    ]
    assert first["done"] is False


@pytest.mark.parametrize("stream", [False, True])
def test_ollama_durations_of_a_reply_with_calls_are_not_zero(stream: bool) -> None:
    pause_s = 0.01
    last = _ollama(_sequence(1, streamed=True), stream=stream, pause_s=pause_s)[-1]
    # The first delta came one pause after the start, the end four pauses after it (clients divide by both).
    assert last["prompt_eval_duration"] >= pause_s * 1e9
    assert last["eval_duration"] >= 4 * pause_s * 1e9
    whole_only = _ollama(_sequence(1, streamed=False), stream=stream)[-1]
    assert whole_only["eval_duration"] > 0 and whole_only["done_reason"] == "stop"


def test_a_call_whose_first_delta_carries_its_arguments_streams_whole_in_every_dialect() -> None:
    # What a remote sends when its parser gives a call in one piece (id, name and arguments together).
    call = CALLS[0]
    sequence: list[Event] = [
        ToolCallDelta(0, call.id, call.name, call.arguments),
        Finished("tool_calls", Usage(3, 9), (call,)),
    ]
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for chunk in _openai_chunks(sequence):
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    rebuilt = state.get_final_completion().choices[0].message.tool_calls or []
    assert [(c.id, c.function.name, c.function.arguments) for c in rebuilt] == [  # type: ignore[union-attr]
        (call.id, call.name, call.arguments)
    ]
    snapshot: Any = None
    buffers: dict[int, bytes] = {}
    for event in _anthropic_events(sequence):
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=buffers)  # type: ignore[arg-type]
    assert [(b.id, b.input) for b in snapshot.content] == [(call.id, json.loads(call.arguments))]
    lines = _ollama(sequence, stream=True)
    assert [line["message"].get("tool_calls") for line in lines] == [
        [{"function": {"index": 0, "name": call.name, "arguments": json.loads(call.arguments)}}],
        None,
    ]
