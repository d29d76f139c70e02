"""The Responses API's translation, without a model: input items read into the seam's chat messages
(an assistant turn gathered from its reasoning, message and calls), the kept responses' bounds, and the
stream of a backend that gives its calls only whole, at the end (a remote may: none here does)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from appliance.backend import Event, Finished, TextDelta, ToolCall, Usage
from appliance.errors import InvalidRequest
from server.responses_items import chat_messages
from server.responses_schemas import ResponsesRequest
from server.responses_store import ResponseStore
from server.responses_stream import response_events
from server.schemas import parse_body


def _messages(items: list[dict[str, Any]], instructions: str | None = None) -> list[dict[str, Any]]:
    return chat_messages(items, instructions, [f"input.{i}" for i in range(len(items))])


def test_an_assistant_turn_is_gathered_from_its_items() -> None:
    items = [
        {"role": "developer", "content": "Be brief."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
        {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "Hm."}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"type": "function_call", "call_id": "c2", "name": "get_time", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "Sunny"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "Noon"}]},
    ]  # fmt: skip
    weather = {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert _messages(items, "Answer in English.") == [
        {"role": "system", "content": "Answer in English."},
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "Checking.", "reasoning_content": "Hm.", "tool_calls": [
            {"id": "c1", "type": "function", "function": weather},
            {"id": "c2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "Sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "Noon"},
    ]  # fmt: skip


def test_a_call_without_words_and_an_image() -> None:
    url = "data:image/png;base64,AAAA"
    image = {"type": "input_image", "image_url": url}
    items = [{"role": "user", "content": [{"type": "input_text", "text": "What is it?"}, image]},
             {"type": "function_call", "call_id": "c1", "name": "look"}]  # fmt: skip
    assert _messages(items) == [
        {"role": "user", "content": [{"type": "text", "text": "What is it?"},
                                     {"type": "image_url", "image_url": {"url": url}}]},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "look", "arguments": "{}"}}]},
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("item", "says"),
    [
        ({"type": "item_reference", "id": "x"}, "input.0: items of type 'item_reference' are not supported"),
        ({"role": "user", "content": [{"type": "input_audio"}]}, "input.0.content.0: parts of type 'input_"),
        ({"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}, "file_id is not supported"),
        ({"type": "function_call", "name": "f"}, "input.0: a function_call needs a name and a call_id"),
        ({"type": "function_call_output", "call_id": "c"}, "needs a call_id and an output"),
        ({"type": "message", "content": "hi"}, "input.0: a message needs a role"),
    ],
)  # fmt: skip
def test_items_that_cannot_be_served_are_refused_by_place(item: dict[str, Any], says: str) -> None:
    with pytest.raises(InvalidRequest, match=says.replace("(", r"\(")):
        _messages([item])


def test_kept_responses_are_bounded_by_count_and_bytes_oldest_first() -> None:
    store = ResponseStore(max_count=2, max_bytes=10_000)
    for name in ("a", "b", "c"):
        assert store.put({"id": name}, [{"text": name}])
    assert len(store) == 2 and store.get("a") is None and store.get("c") is not None
    big = [{"text": "x" * 6_000}]
    assert store.put({"id": "d"}, big) and store.get("b") is None and store.get("c") is not None
    assert store.put({"id": "e"}, big) and [store.get(k) is None for k in "cd"] == [True, True]
    assert store.size_bytes <= 10_000
    assert not store.put({"id": "f"}, [{"text": "x" * 20_000}]) and store.get("e") is not None
    assert store.delete("e") and not store.delete("e") and store.size_bytes == 0
    assert not ResponseStore(max_count=0, max_bytes=10_000).put({"id": "g"}, [])


async def _events(*events: Event) -> AsyncIterator[Event]:
    for event in events:
        yield event


def test_calls_given_only_whole_at_the_end_stream_once_each() -> None:
    body = parse_body(b'{"input": "hi"}', ResponsesRequest)
    end = Finished("tool_calls", Usage(5, 7), (ToolCall("c1", "get_weather", '{"city": "Paris"}'),))

    def finish(status: str, output: list[dict[str, Any]], last: Any, error: Any) -> dict[str, Any]:
        return {"status": status, "output": output, "input": body.input}

    async def run() -> list[dict[str, Any]]:
        stream = response_events(_events(TextDelta("Let me see."), end), {"status": "in_progress"}, finish,
                                 logprobs=False, namespaces={})  # fmt: skip
        return [event async for event in stream]

    events = asyncio.run(run())
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done", "response.completed",
    ]  # fmt: skip
    message, call = events[-1]["response"]["output"]
    assert message["content"][0]["text"] == "Let me see." and message["status"] == "completed"
    assert (call["call_id"], call["name"], call["arguments"]) == ("c1", "get_weather", '{"city": "Paris"}')
    assert events[8]["output_index"] == 1 and events[9]["item_id"] == call["id"]
