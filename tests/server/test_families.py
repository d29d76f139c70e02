"""Model families on a real daemon: the embedded model's weights served under several names, each with
a real family's chat template (`chat_template_file`), so the engine recognises the family, gives the
template the tools, reads the family's native calls and thoughts, and streams them. A client
``grammar`` makes the model write exact native text (issue 16's way of testing tiny models)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from appliance.engine.formats.schema import literal
from models.embedded import embedded_model_path
from tests import web
from tests.server.conftest import NO_EOS_BIAS, Daemon, start_daemon, stop_daemon

TEMPLATES = Path(__file__).parent.parent / "fixtures" / "templates"
# model id -> the real template it is served with
FAMILY_MODELS = {
    "qwen3-family": "Qwen-Qwen3-0.6B.jinja",
    "qwen25-family": "Qwen-Qwen2.5-7B-Instruct.jinja",
    "r1-family": "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
    "coder-family": "Qwen3-Coder.jinja",
    "llama31-family": "meta-llama-Llama-3.1-8B-Instruct.jinja",
    "mistral-family": "Mistral-Small-3.2-24B-Instruct-2506.jinja",
    "gptoss-family": "openai-gpt-oss-120b.jinja",
    "granite-family": "ibm-granite-granite-3.3-2B-Instruct.jinja",
    "command-family": "CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja",
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    home = tmp_path_factory.mktemp("families")
    store = home / "data" / "models"
    store.mkdir(parents=True)
    config = []
    for model_id, template in FAMILY_MODELS.items():
        os.link(embedded_model_path(), store / f"{model_id}.Q4_1.gguf")  # the same weights, no copy
        config.append(
            f'[models."{model_id}"]\nchat_template_file = "{TEMPLATES / template}"\ntemperature = 0\n'
        )
    (home / "config.toml").write_text("\n".join(config))
    d = start_daemon(home, "--parallel", "1", "--ctx", "2048")
    yield d
    stop_daemon(d)


def _forced(text: str) -> dict[str, Any]:
    """A client grammar that makes the model write exactly ``text``."""
    return {"grammar": f"root ::= {literal(text)}"}


QWEN3_REPLY = (
    "<think>\nThe user wants the weather.\n</think>\n\nLet me check."
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
)


def _streamed(daemon: Daemon, model: str, **extra: Any) -> tuple[str, str, list[tuple[str, str]], str]:
    """Content, reasoning, calls (name, arguments) and finish reason, joined from a stream's chunks."""
    content, reasoning, finish = "", "", ""
    calls: dict[int, list[str]] = {}
    stream = daemon.client().chat.completions.create(
        model=model, messages=ASK, stream=True, max_tokens=300, **extra
    )
    for chunk in stream:
        delta = chunk.choices[0].delta
        content += delta.content or ""
        reasoning += getattr(delta, "reasoning_content", None) or ""
        for piece in delta.tool_calls or []:
            call = calls.setdefault(piece.index, ["", ""])
            if piece.function is not None:
                call[0] += piece.function.name or ""
                call[1] += piece.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    return content, reasoning, [(n, a) for n, a in (calls[i] for i in sorted(calls))], finish


def test_qwen3_thoughts_words_and_a_native_call_come_apart_whole_and_streamed(daemon: Daemon) -> None:
    extra = {"tools": [WEATHER], "extra_body": _forced(QWEN3_REPLY)}
    reply = daemon.client().chat.completions.create(
        model="qwen3-family", messages=ASK, max_tokens=200, **extra
    )
    message = reply.choices[0].message
    assert reply.choices[0].finish_reason == "tool_calls"
    assert message.content == "Let me check."
    assert getattr(message, "reasoning_content", None) == "The user wants the weather."
    assert message.tool_calls is not None
    assert [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    content, reasoning, calls, finish = _streamed(daemon, "qwen3-family", **extra)
    assert (content, reasoning, finish) == ("Let me check.", "The user wants the weather.", "tool_calls")
    assert calls == [("get_weather", '{"city": "Paris"}')]


def test_the_responses_api_gives_thoughts_words_and_a_call_as_items(daemon: Daemon) -> None:
    """The same Qwen3 reply through `POST /v1/responses`: a reasoning item (its text whole, in
    `content`), a message, a function_call; streamed, the reasoning as `response.reasoning_text.delta`
    events, and the SDK's accumulation ends at the same items. The thoughts go back to the template
    when the reasoning item is sent again."""
    client = daemon.client()
    tool = {"type": "function", **WEATHER["function"]}
    ask = {"model": "qwen3-family", "input": ASK[0]["content"], "tools": [tool], "max_output_tokens": 200,
           "extra_body": _forced(QWEN3_REPLY)}  # fmt: skip
    whole = client.responses.create(**ask)  # type: ignore[call-overload]
    assert [item.type for item in whole.output] == ["reasoning", "message", "function_call"]
    reasoning, _, call = whole.output
    assert [part.text for part in reasoning.content] == ["The user wants the weather."]
    assert whole.output_text == "Let me check." and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"}
    with client.responses.stream(**ask) as stream:  # type: ignore[call-overload]
        events = list(stream)
        final = stream.get_final_response()
    thoughts = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
    assert thoughts == "The user wants the weather." and final.output_text == "Let me check."
    assert [item.type for item in final.output] == ["reasoning", "message", "function_call"]
    # The reasoning item sent back reaches the template as the turn's reasoning_content: the prompt
    # grows by the thoughts (Qwen3's template keeps them for the turn after the last user message).
    result = {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny"}
    history = [{"role": "user", "content": ASK[0]["content"]}, *[item.model_dump(exclude_none=True)
               for item in whole.output], result]  # fmt: skip
    bare = [item for item in history if item.get("type") != "reasoning"]
    usage = [client.responses.create(model="qwen3-family", input=items, max_output_tokens=1).usage
             for items in (history, bare)]  # fmt: skip
    assert usage[0] is not None and usage[1] is not None
    assert usage[0].input_tokens > usage[1].input_tokens


def test_thoughts_without_tools_are_split_out(daemon: Daemon) -> None:
    forced = _forced("<think>\nEasy.\n</think>\n\nIt is sunny.")
    reply = daemon.client().chat.completions.create(
        model="qwen3-family", messages=ASK, max_tokens=100, extra_body=forced
    )
    message = reply.choices[0].message
    assert (message.content, getattr(message, "reasoning_content", None)) == ("It is sunny.", "Easy.")
    assert reply.choices[0].finish_reason == "stop"


def test_the_template_gets_the_tools_and_no_generic_instructions(daemon: Daemon) -> None:
    """Qwen2.5's template lists the tools in its own words (<tools></tools>): the prompt grows by the
    tool's JSON (what is rendered is checked in tests/unit/test_prompts.py)."""
    client = daemon.client()
    plain = client.chat.completions.create(model="qwen25-family", messages=ASK, max_tokens=1)
    with_tools = client.chat.completions.create(
        model="qwen25-family", messages=ASK, max_tokens=1, tools=[WEATHER], extra_body=_forced("x")
    )
    assert plain.usage is not None and with_tools.usage is not None
    assert with_tools.usage.prompt_tokens > plain.usage.prompt_tokens + 40


def test_a_required_call_is_native_and_valid_in_the_anthropic_dialect(daemon: Daemon) -> None:
    client = anthropic.Anthropic(base_url=daemon.url, api_key="unused", max_retries=0)
    tool = {
        "name": "get_weather",
        "description": "The weather.",
        "input_schema": WEATHER["function"]["parameters"],
    }
    reply = client.messages.create(
        model="qwen25-family",
        max_tokens=120,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[tool],  # type: ignore[list-item]
        tool_choice={"type": "any"},
    )
    uses = [block for block in reply.content if block.type == "tool_use"]
    assert reply.stop_reason == "tool_use" and len(uses) == 1
    assert uses[0].name == "get_weather" and isinstance(uses[0].input, dict) and "city" in uses[0].input
    with client.messages.stream(
        model="qwen25-family",
        max_tokens=120,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[tool],  # type: ignore[list-item]
        tool_choice={"type": "any"},
    ) as stream:
        kinds = [event.type for event in stream]
        streamed = stream.get_final_message()
    assert "input_json" in kinds  # the call's arguments came in pieces as the model wrote them
    again = [block for block in streamed.content if block.type == "tool_use"]
    assert [(b.name, b.input) for b in again] == [(b.name, b.input) for b in uses]  # temperature 0


def test_anthropic_streams_thinking_text_and_a_call_with_the_sdk(daemon: Daemon) -> None:
    """Qwen3 made to think, say a few words and call a tool (its native text, by a client grammar), read
    by the anthropic SDK's stream: a thinking block, a text block and a tool_use block, the prompt's
    tokens in message_start as count_tokens gives them."""
    client = anthropic.Anthropic(base_url=daemon.url, api_key="unused", max_retries=0)
    tool = {
        "name": "get_weather",
        "description": "The weather.",
        "input_schema": WEATHER["function"]["parameters"],
    }
    body: dict[str, Any] = {"model": "qwen3-family", "messages": ASK, "tools": [tool],
                            "thinking": {"type": "enabled", "budget_tokens": 1024}}  # fmt: skip
    counted = client.messages.count_tokens(**body, extra_body=_forced(QWEN3_REPLY)).input_tokens
    with client.messages.stream(max_tokens=200, **body, extra_body=_forced(QWEN3_REPLY)) as stream:
        events = list(stream)
        final = stream.get_final_message()
    started = [e.content_block.type for e in events if e.type == "content_block_start"]
    assert started == ["thinking", "text", "tool_use"]
    assert events[0].type == "message_start" and events[0].message.usage.input_tokens == counted > 0
    assert [b.type for b in final.content] == ["thinking", "text", "tool_use"]
    thinking, text, use = final.content
    assert thinking.thinking == "The user wants the weather." and text.text == "Let me check."  # type: ignore[union-attr]
    assert (use.name, use.input) == ("get_weather", {"city": "Paris"})  # type: ignore[union-attr]
    assert final.stop_reason == "tool_use" and final.usage.input_tokens == counted


def test_a_history_with_native_calls_and_results_renders(daemon: Daemon) -> None:
    """An agent's second turn: the earlier call and its result go back through the family's template."""
    messages = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C and sunny"},
    ]
    reply = daemon.client().chat.completions.create(
        model="qwen3-family",
        messages=messages,
        max_tokens=8,
        tools=[WEATHER],  # type: ignore[arg-type]
    )
    assert reply.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_a_template_that_opens_the_thoughts_and_a_thinking_budget(daemon: Daemon) -> None:
    """DeepSeek R1's template ends the prompt inside <think>: the first words are thoughts. With
    llama-server's reasoning_budget_tokens the thoughts are closed for the model after that many tokens
    and it goes on to answer (the end-of-text tokens banned, so it answers up to max_tokens)."""
    client = daemon.client()
    ban_eos = {"logit_bias": NO_EOS_BIAS}
    free = client.chat.completions.create(model="r1-family", messages=ASK, max_tokens=30, **ban_eos)
    assert getattr(free.choices[0].message, "reasoning_content", None)  # thoughts, and only thoughts
    assert not free.choices[0].message.content
    bounded = client.chat.completions.create(
        model="r1-family", messages=ASK, max_tokens=30, extra_body={"reasoning_budget_tokens": 6}, **ban_eos
    )
    message = bounded.choices[0].message
    thoughts = getattr(message, "reasoning_content", None) or ""
    assert thoughts and len(thoughts) < len(getattr(free.choices[0].message, "reasoning_content", ""))
    assert message.content and bounded.choices[0].finish_reason == "length"
    off = client.chat.completions.create(
        model="r1-family",
        messages=ASK,
        max_tokens=10,
        reasoning_effort="none",
        **ban_eos,  # type: ignore[arg-type]
    )
    assert off.choices[0].message.content and not getattr(off.choices[0].message, "reasoning_content", None)


def test_capabilities_follow_the_configured_template(daemon: Daemon) -> None:
    """The same weights declare thinking under Qwen3's template and not under Qwen2.5's, with the
    family's tool format named (read from the template file the settings give, without a load)."""
    shown = {
        m: web.post(f"{daemon.url}/api/show", json={"model": m}, timeout=30).json() for m in FAMILY_MODELS
    }
    assert "thinking" in shown["qwen3-family"]["capabilities"]
    assert "thinking" not in shown["qwen25-family"]["capabilities"]
    assert all("tools" in s["capabilities"] for s in shown.values())
    assert shown["qwen25-family"]["appliance"]["declared"]["tool_format"] == "hermes"


# model -> (what it is made to write, the thoughts that come apart): each family's native call of
# get_weather(city="Paris"), as its model writes one (see each family's unit tests for the sources).
# One family of each way of reading a reply (XML parameters typed by the schema, a bare JSON reply,
# harmony channels, thoughts the prompt opened); the others' parsers are the same machinery, tested
# whole and at every split in tests/unit/test_formats_family_*.py (Mistral, Granite and Command R7B
# prompts are long: their daemon runs cost more than they check here).
NATIVE_CALLS = {
    "coder-family": (
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>",
        "",
    ),
    "llama31-family": ('{"name": "get_weather", "parameters": {"city": "Paris"}}', ""),
    "gptoss-family": (
        "<|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant<|channel|>commentary "
        'to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}<|call|>',
        "Need the weather.",
    ),
    "r1-family": (
        "Let me call it.\n</think>\n\n<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>"
        'get_weather\n```json\n{"city": "Paris"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>',
        "Let me call it.",
    ),
}


@pytest.mark.parametrize("model", list(NATIVE_CALLS))
def test_each_family_s_native_call_is_read_as_it_streams(daemon: Daemon, model: str) -> None:
    """The model is made to write its family's own call text; the OpenAI stream's deltas join into the
    call (and the thoughts apart). The whole answer takes the same reader (see the Qwen3 test)."""
    output, thoughts = NATIVE_CALLS[model]
    extra = {"tools": [WEATHER], "extra_body": _forced(output)}
    content, reasoning, calls, finish = _streamed(daemon, model, **extra)
    assert [(name, json.loads(arguments)) for name, arguments in calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    assert (content, reasoning, finish) == ("", thoughts, "tool_calls")
