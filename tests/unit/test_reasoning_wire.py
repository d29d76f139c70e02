"""A model's thinking, as every dialect writes it and reads it back: OpenAI ``reasoning_content``,
Ollama ``thinking``, Anthropic thinking blocks; and each dialect's switch as the core's Reasoning."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from appliance.backend import ChatParams, Event, Finished, Reasoning, TextDelta, Usage
from appliance.config import PerModelSettings, RemoteSettings
from appliance.remotes.backend import RemoteStream, chat_body
from appliance.remotes.pool import Remote
from server import (
    anthropic_stream,
    anthropic_translate,
    ollama_params,
    ollama_routes,
    openai_payloads,
    openai_routes,
)
from server.anthropic_schemas import AnthropicRequest
from server.compat_schemas import OllamaChatRequest
from server.schemas import ChatCompletionRequest, parse_body

THOUGHT = [TextDelta("", reasoning="The user "), TextDelta("", reasoning="greets me."), TextDelta("Hi"),
           TextDelta(" there"), Finished("stop", Usage(5, 6))]  # fmt: skip


async def _events() -> AsyncIterator[Event]:
    for event in THOUGHT:
        yield event


async def _all(items: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in items]


def _run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_openai_whole_and_streamed() -> None:
    meta = openai_payloads.Meta("chatcmpl-1", 0, "m")
    whole = openai_payloads.chat_completion(_run(openai_payloads.collect(_events())), meta, logprobs=False)
    message = whole["choices"][0]["message"]
    assert (message["reasoning_content"], message["content"]) == ("The user greets me.", "Hi there")
    chunks = _run(_all(openai_payloads.chat_chunks(_events(), meta, logprobs=False, include_usage=False)))
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "The user greets me."
    assert "".join(d.get("content", "") for d in deltas) == "Hi there"
    assert not any("content" in d and "reasoning_content" in d for d in deltas)  # one field per chunk


def test_ollama_whole_and_streamed() -> None:
    whole = _run(ollama_routes._answer(_events(), lambda: None, "m", stream=False, chat=True, started=0))
    message = json.loads(whole.body)["message"]
    assert (message["thinking"], message["content"]) == ("The user greets me.", "Hi there")

    async def lines() -> list[dict[str, Any]]:
        streamed = await ollama_routes._answer(
            _events(), lambda: None, "m", stream=True, chat=False, started=0
        )
        return [json.loads(line) async for line in streamed.body_iterator]  # type: ignore[arg-type]

    got = _run(lines())
    assert "".join(line.get("thinking", "") for line in got) == "The user greets me."
    assert "".join(line["response"] for line in got) == "Hi there" and got[-1]["done"]


def test_anthropic_streams_a_thinking_block_then_a_text_block() -> None:
    reply = anthropic_stream.Reply("msg_1", "m")
    frames = _run(_all(anthropic_stream.events(reply, _events(), lambda: None, None)))
    events = [json.loads(f.decode().split("data: ", 1)[1]) for f in frames]
    kinds = [(e["type"], e.get("index"), (e.get("content_block") or e.get("delta") or {}).get("type"))
             for e in events]  # fmt: skip
    assert kinds == [
        ("message_start", None, None),
        ("content_block_start", 0, "thinking"), ("content_block_delta", 0, "thinking_delta"),
        ("content_block_delta", 0, "thinking_delta"), ("content_block_stop", 0, None),
        ("content_block_start", 1, "text"), ("content_block_delta", 1, "text_delta"),
        ("content_block_delta", 1, "text_delta"), ("content_block_stop", 1, None),
        ("message_delta", None, None), ("message_stop", None, None),
    ]  # fmt: skip
    assert "".join(e["delta"].get("thinking", "") for e in events if e["type"] == "content_block_delta") == (
        "The user greets me."
    )


def test_anthropic_s_omitted_thinking_keeps_the_block_without_its_text() -> None:
    """``thinking.display: "omitted"``: the blocks are there (clients count on their order), empty."""
    reply = anthropic_stream.Reply("msg_1", "m", omit_thinking=True)
    frames = _run(_all(anthropic_stream.events(reply, _events(), lambda: None, 5)))
    events = [json.loads(f.decode().split("data: ", 1)[1]) for f in frames]
    assert events[0]["message"]["usage"]["input_tokens"] == 5
    starts = [e["content_block"]["type"] for e in events if e["type"] == "content_block_start"]
    deltas = [e["delta"]["type"] for e in events if e["type"] == "content_block_delta"]
    assert (starts, deltas) == (["thinking", "text"], ["text_delta", "text_delta"])
    whole = anthropic_stream.message(reply, "Hi there", "The user greets me.", THOUGHT[-1])  # type: ignore[arg-type]
    assert whole["content"] == [{"type": "thinking", "thinking": "", "signature": ""},
                                {"type": "text", "text": "Hi there"}]  # fmt: skip


def test_each_dialect_s_switch_becomes_one_reasoning() -> None:
    def openai(effort: str) -> Reasoning:
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "reasoning_effort": effort}
        return openai_routes.reasoning_of(
            parse_body(json.dumps(body).encode(), ChatCompletionRequest).reasoning_effort
        )

    assert openai("none") == Reasoning(enabled=False)
    assert openai("high") == Reasoning(enabled=True, effort="high")
    think = parse_body(b'{"model": "m", "think": "low"}', OllamaChatRequest).think
    assert ollama_params.think(think) == Reasoning(enabled=True, effort="low")
    assert ollama_params.think(False) == Reasoning(enabled=False)
    anthropic = {"model": "m", "max_tokens": 2048, "messages": [{"role": "user", "content": "x"}],
                 "thinking": {"type": "enabled", "budget_tokens": 1024}}  # fmt: skip
    body = parse_body(json.dumps(anthropic).encode(), AnthropicRequest)
    params = anthropic_translate.chat_params(body, PerModelSettings())
    assert params.reasoning == Reasoning(enabled=True, budget_tokens=1024)


def test_a_previous_turn_s_thinking_goes_back_to_the_model() -> None:
    body = {"model": "m", "max_tokens": 9, "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "greet back", "signature": "s"},
                                          {"type": "redacted_thinking", "data": "xx"},
                                          {"type": "text", "text": "Hello"}]},
        {"role": "user", "content": "and?"}]}  # fmt: skip
    messages = anthropic_translate.messages(parse_body(json.dumps(body).encode(), AnthropicRequest))
    assert messages[1] == {"role": "assistant", "content": "Hello", "reasoning_content": "greet back"}
    ollama = {"model": "m", "messages": [{"role": "assistant", "content": "Hello", "thinking": "greet back"}]}
    assert (
        ollama_params.messages(parse_body(json.dumps(ollama).encode(), OllamaChatRequest).messages or [])[0][
            "reasoning_content"
        ]
        == "greet back"
    )


@pytest.mark.parametrize("thinking", [{"type": "enabled"}, {"type": "enabled", "budget_tokens": 100}])
def test_a_thinking_budget_is_required_and_at_least_1024(thinking: dict[str, Any]) -> None:
    body = {
        "model": "m",
        "max_tokens": 9,
        "messages": [{"role": "user", "content": "x"}],
        "thinking": thinking,
    }
    with pytest.raises(Exception, match="budget_tokens"):
        parse_body(json.dumps(body).encode(), AnthropicRequest)


# vLLM's stream with a reasoning parser on (`vllm serve ... --reasoning-parser deepseek_r1`): the thoughts
# in `reasoning_content` deltas (`reasoning` in newer vLLM), the answer in `content`. No model here thinks,
# so the stream is written out as vLLM's docs show it.
_VLLM_STREAM = (
    b"".join(
        b"data: " + json.dumps(chunk).encode() + b"\n\n"
        for chunk in (
            {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
            {"choices": [{"index": 0, "delta": {"reasoning_content": "The user "}, "finish_reason": None}]},
            {"choices": [{"index": 0, "delta": {"reasoning": "greets me."}, "finish_reason": None}]},
            {"choices": [{"index": 0, "delta": {"content": "Hi there"}, "finish_reason": "stop"}]},
            {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 6}},
        )
    )
    + b"data: [DONE]\n\n"
)


def test_a_remote_s_thoughts_come_back_apart_from_its_answer() -> None:
    remote = Remote(RemoteSettings(name="gpu", kind="vllm", base_url="http://100.64.0.2:8000"))

    async def events() -> list[Event]:
        response = httpx.Response(200, content=_VLLM_STREAM)
        chunks = response.aiter_bytes()
        return [e async for e in RemoteStream(remote, response, chunks, b"", chat=True)]

    got = _run(events())
    thoughts = "".join(e.reasoning for e in got if isinstance(e, TextDelta))
    assert (thoughts, "".join(e.text for e in got if isinstance(e, TextDelta))) == (
        "The user greets me.",
        "Hi there",
    )
    assert got[-1] == Finished("stop", Usage(5, 6))


@pytest.mark.parametrize(
    ("kind", "reasoning", "sent"),
    [
        ("vllm", Reasoning(enabled=False), {"chat_template_kwargs": {"enable_thinking": False}}),
        ("sglang", Reasoning(enabled=True, effort="minimal"),
         {"reasoning_effort": "low", "chat_template_kwargs": {"enable_thinking": True}}),
        ("openai", Reasoning(enabled=False), {"reasoning_effort": "none"}),
        ("openai", Reasoning(), {}),
    ],
)  # fmt: skip
def test_the_switch_goes_to_the_remote_as_it_understands_it(
    kind: str, reasoning: Reasoning, sent: dict[str, Any]
) -> None:
    body = chat_body(ChatParams(messages=[{"role": "user", "content": "x"}], reasoning=reasoning), "m", kind)
    assert {k: body[k] for k in ("reasoning_effort", "chat_template_kwargs") if k in body} == sent
