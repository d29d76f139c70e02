"""An Anthropic request in the core's terms (server.anthropic_translate): the switches each field turns,
and what is refused before any model is asked."""

from __future__ import annotations

import json
from typing import Any

import pytest

from appliance.backend import Reasoning
from appliance.config import PerModelSettings
from appliance.errors import InvalidRequest
from server.anthropic_schemas import AnthropicPrompt, AnthropicRequest
from server.anthropic_translate import chat_params
from server.schemas import parse_body

ASK = [{"role": "user", "content": "x"}]
TOOL = {"name": "f", "input_schema": {"type": "object"}}


def _params(**fields: Any) -> Any:
    body = parse_body(json.dumps({"model": "m", "max_tokens": 9, "messages": ASK, **fields}).encode(),
                      AnthropicRequest)  # fmt: skip
    return chat_params(body, PerModelSettings())


@pytest.mark.parametrize(
    ("fields", "reasoning"),
    [({}, Reasoning()),
     ({"thinking": {"type": "disabled"}, "output_config": {"effort": "high"}}, Reasoning(enabled=False)),
     ({"thinking": {"type": "adaptive"}, "output_config": {"effort": "max"}}, Reasoning(True, "high")),
     ({"thinking": {"type": "between_tools"}}, Reasoning(enabled=True)),
     ({"output_config": {"effort": "low"}}, Reasoning(effort="low")),
     ({"thinking": {"type": "enabled", "budget_tokens": 2048, "display": "omitted"}},
      Reasoning(enabled=True, budget_tokens=2048))],
)  # fmt: skip
def test_thinking_and_effort(fields: dict[str, Any], reasoning: Reasoning) -> None:
    assert _params(**fields).reasoning == reasoning


@pytest.mark.parametrize(
    ("choice", "openai", "parallel"),
    [(None, "auto", False), ({"type": "auto"}, "auto", False), ({"type": "any"}, "required", False),
     ({"type": "none"}, "none", False),
     ({"type": "tool", "name": "f"}, {"type": "function", "function": {"name": "f"}}, False),
     ({"type": "any", "disable_parallel_tool_use": False}, "required", True),
     ({"type": "auto", "disable_parallel_tool_use": True}, "auto", False)],
)  # fmt: skip
def test_tool_choice(choice: dict[str, Any] | None, openai: Any, parallel: bool) -> None:
    params = _params(tools=[TOOL], **({"tool_choice": choice} if choice else {}))
    assert (params.tool_choice, params.parallel_tool_calls) == (openai, parallel)
    assert params.tools == [{"type": "function", "function": {"name": "f", "description": "",
                                                              "parameters": {"type": "object"}}}]  # fmt: skip


def test_structured_output_from_either_spelling_and_stop_sequences() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    fmt = {"type": "json_schema", "schema": schema}
    assert _params(output_config={"format": fmt}).json_schema == schema
    assert _params(output_format=fmt).json_schema == schema
    assert _params(stop_sequences=["a", "b"], top_k=3).stop == ("a", "b")
    with pytest.raises(InvalidRequest, match="not both"):
        _params(output_config={"format": fmt}, output_format=fmt)


def test_a_count_body_needs_no_max_tokens_and_translates_the_same() -> None:
    fields = {"model": "m", "messages": ASK, "tools": [TOOL], "system": "s"}
    counted = chat_params(parse_body(json.dumps(fields).encode(), AnthropicPrompt), PerModelSettings())
    asked = _params(tools=[TOOL], system="s")
    assert (counted.messages, counted.tools, counted.tool_choice) == (
        asked.messages,
        asked.tools,
        asked.tool_choice,
    )
    assert counted.max_tokens is None


def test_a_text_document_is_its_text_and_others_are_refused() -> None:
    document = {"type": "document", "title": "T", "source": {"type": "text", "data": "body"}}
    params = _params(messages=[{"role": "user", "content": [document, {"type": "text", "text": "?"}]}])
    assert params.messages == [{"role": "user", "content": "T\n\nbody?"}]
    pdf = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "x"}}
    with pytest.raises(InvalidRequest, match="application/pdf documents are not supported yet"):
        _params(messages=[{"role": "user", "content": [pdf]}])
    with pytest.raises(InvalidRequest, match="server tools"):
        _params(tools=[{"type": "web_search_20250305", "name": "web_search"}])
    with pytest.raises(InvalidRequest, match="needs the name"):
        _params(tools=[TOOL], tool_choice={"type": "tool"})


def test_system_messages_among_the_others_join_the_system_prompt() -> None:
    """Claude Code sends a "system" message after the user's first: templates often take one system
    message, first."""
    system = {"role": "system", "content": [{"type": "text", "text": "B"}]}
    asked = [{"role": "user", "content": "hi"}, system]
    assert _params(system="A", messages=asked).messages == [
        {"role": "system", "content": "A\n\nB"},
        {"role": "user", "content": "hi"},
    ]
