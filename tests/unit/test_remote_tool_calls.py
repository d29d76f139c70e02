"""A remote's streamed tool calls (vLLM's and SGLang's ``delta.tool_calls`` pieces) come out of the
remote backend as the seam's ToolCallDelta events as they arrive, and whole in Finished; and the first
of them is the request's first token in the metrics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from appliance.backend import Event, Finished, TextDelta, ToolCall, ToolCallDelta, Usage
from appliance.config import RemoteSettings, Settings
from appliance.hardware.detect import detect_hardware
from appliance.manager import ModelManager
from appliance.remotes.backend import RemoteStream
from appliance.remotes.pool import Remote
from server import openai_payloads
from server.metrics import Metrics
from server.record import RequestRecord

# Recorded streams. vLLM: Llama 3.1 8B behind vLLM's llama3_json tool parser (NVIDIA NIM), as the Vercel
# AI SDK's openai-compatible tests keep it: the id, type and name in a call's first piece, then argument
# text alone, an empty piece with the finish. SGLang: Qwen2.5-7B-Instruct with --tool-call-parser qwen25,
# as SGLang's function-calling docs print it through the openai client: text, then two calls, each begun
# with its id, name and empty arguments, later pieces with null id and name (the docs show the text
# joined and the usage of the unstreamed request: both come in one chunk here).
_RECORDED = Path(__file__).resolve().parents[1] / "fixtures" / "remotes"
VLLM_ONE_CALL = (_RECORDED / "vllm-llama3.1-tool-call-stream.txt").read_bytes()
SGLANG_TWO_CALLS = (_RECORDED / "sglang-qwen2.5-tool-calls-stream.txt").read_bytes()
_SG_IDS = ("call_73015f08214746f8a5b7bab4", "call_5c45b257776045a68ec8fb84")


def _remote_events(stream: bytes) -> list[Event]:
    remote = Remote(RemoteSettings(name="gpu", kind="vllm", base_url="http://100.64.0.2:8000"))

    async def events() -> list[Event]:
        response = httpx.Response(200, content=stream)
        return [e async for e in RemoteStream(remote, response, response.aiter_bytes(), b"", chat=True)]

    return list(asyncio.run(events()))


def test_vllm_s_streamed_call_comes_as_deltas_then_whole() -> None:
    got = _remote_events(VLLM_ONE_CALL)
    call_id = "chatcmpl-tool-b3b307239370432d9910d4b79b4dbbaa"
    assert [e for e in got if isinstance(e, ToolCallDelta)] == [
        ToolCallDelta(0, call_id, "searchGoogle"),
        *[ToolCallDelta(0, arguments=a) for a in ('{"query": "', "latest", " news", " on", ' ai"}')],
    ]
    assert got[-1] == Finished(
        "tool_calls", Usage(226, 20), (ToolCall(call_id, "searchGoogle", '{"query": "latest news on ai"}'),)
    )


def _openai_rebuilt(events: list[Event]) -> Any:
    """The message an OpenAI client rebuilds from the OpenAI stream of ``events``."""

    async def replay() -> AsyncIterator[Event]:
        for event in events:
            yield event

    async def chunks() -> list[dict[str, Any]]:
        meta = openai_payloads.Meta("chatcmpl-1", 0, "m")
        stream = openai_payloads.chat_chunks(replay(), meta, logprobs=False, include_usage=False)
        return [chunk async for chunk in stream]

    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for chunk in asyncio.run(chunks()):
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    return state.get_final_completion().choices[0].message


def test_sglang_s_text_and_two_calls_come_in_order() -> None:
    got = _remote_events(SGLANG_TWO_CALLS)
    assert isinstance(got[0], TextDelta) and got[0].text.startswith("To determine the current weather")
    deltas = [e for e in got if isinstance(e, ToolCallDelta)]
    assert [(d.index, d.id, d.name) for d in deltas if d.name] == [
        (0, _SG_IDS[0], "get_current_weather"),
        (1, _SG_IDS[1], "get_current_weather"),
    ]
    assert all(not d.id and not d.name for d in deltas if d.arguments)
    finished = got[-1]
    assert isinstance(finished, Finished) and finished.finish_reason == "tool_calls"
    assert [(c.id, c.name, json.loads(c.arguments)) for c in finished.tool_calls] == [
        (_SG_IDS[0], "get_current_weather", {"city": "Boston", "state": "MA", "unit": "celsius"}),
        (_SG_IDS[1], "get_current_weather", {"city": "Boston", "state": "MA", "unit": "fahrenheit"}),
    ]
    # Passed on to an OpenAI client, the streamed pieces rebuild the same calls.
    message = _openai_rebuilt(got)
    rebuilt = [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or []]
    assert rebuilt == [(c.id, c.name, c.arguments) for c in finished.tool_calls]
    assert message.content == got[0].text


def _metrics() -> Metrics:
    settings = Settings()
    return Metrics(ModelManager(settings, detect_hardware(), [], default_id="m"))


def test_the_first_tool_call_delta_is_the_first_token() -> None:
    metrics = _metrics()
    record = RequestRecord(endpoint="/v1/chat/completions", model="m")
    pause_s = 0.01

    async def events() -> AsyncIterator[Event]:
        await asyncio.sleep(pause_s)
        yield ToolCallDelta(0, "call_a", "get_weather")
        await asyncio.sleep(pause_s)
        yield ToolCallDelta(0, arguments="{}")
        yield Finished("tool_calls", Usage(3, 4), (ToolCall("call_a", "get_weather", "{}"),))

    async def observe() -> None:
        async for _ in metrics.observe(events(), record):
            pass

    asyncio.run(observe())
    assert record.ttft_s is not None and record.last_token_s is not None
    assert pause_s <= record.ttft_s < record.last_token_s - record.started_s
    assert record.fields()["ttft_ms"] is not None
    assert metrics.ttft.labels("m", "local")._sum.get() == record.ttft_s  # the histogram saw it too


def test_calls_given_only_whole_are_the_first_output_when_nothing_came_before() -> None:
    record = RequestRecord(endpoint="/v1/chat/completions", model="m")

    async def events() -> AsyncIterator[Event]:
        yield Finished("tool_calls", Usage(3, 4), (ToolCall("call_a", "get_weather", "{}"),))

    async def observe() -> None:
        async for _ in _metrics().observe(events(), record):
            pass

    asyncio.run(observe())
    assert record.ttft_s is not None and record.fields()["ttft_ms"] is not None
