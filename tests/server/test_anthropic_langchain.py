"""LangChain's ChatAnthropic, unchanged, pointed at a real daemon (``base_url``, any API key): invoke,
stream, bind_tools with a forced call, with_structured_output by each method it offers, and its token
count (which calls /v1/messages/count_tokens). The 135M model is weak: calls are forced and replies short;
the assertions are on structure."""

from __future__ import annotations

import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool
from pydantic import BaseModel, Field

from tests.server.conftest import MODEL_ID, Daemon


@pytest.fixture(scope="module")
def chat(daemon: Daemon) -> ChatAnthropic:
    return ChatAnthropic(model=MODEL_ID, base_url=daemon.url, api_key="unused", max_tokens=40,  # type: ignore[call-arg]
                         temperature=0, max_retries=0)  # fmt: skip


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny in {city}"


class Colour(BaseModel):
    """A colour."""

    name: str = Field(description="the colour's name")


def test_invoke_and_stream(chat: ChatAnthropic) -> None:
    reply = chat.invoke("Say hello", max_tokens=8)
    assert isinstance(reply, AIMessage) and isinstance(reply.content, str) and reply.content
    assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] <= 8
    assert reply.response_metadata["stop_reason"] in ("end_turn", "max_tokens")
    chunks = list(chat.stream("Say hello", max_tokens=8))
    assert len(chunks) > 1 and "".join(chunk.text for chunk in chunks) == reply.content  # temperature 0


def test_token_count_is_the_invoke_s_input_tokens(chat: ChatAnthropic) -> None:
    asked = [HumanMessage("Say hello")]
    counted = chat.get_num_tokens_from_messages(asked, tools=[get_weather])  # type: ignore[list-item]
    reply = chat.bind_tools([get_weather]).invoke(asked, max_tokens=1)
    assert reply.usage_metadata is not None and counted == reply.usage_metadata["input_tokens"]


@pytest.mark.parametrize("choice", ["get_weather", "any"])
def test_bind_tools_with_a_forced_call(chat: ChatAnthropic, choice: str) -> None:
    reply = chat.bind_tools([get_weather], tool_choice=choice).invoke("What is the weather in Paris?")
    assert isinstance(reply, AIMessage) and len(reply.tool_calls) == 1
    call = reply.tool_calls[0]
    assert call["name"] == "get_weather" and isinstance(call["args"].get("city"), str) and call["id"]
    assert reply.response_metadata["stop_reason"] == "tool_use"


# json_schema: output_config.format, enforced by a grammar; function_calling: a forced tool call.
# (json_mode, LangChain's old name, warns and sends json_schema.)
@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_with_structured_output_by_each_method(chat: ChatAnthropic, method: str) -> None:
    structured = chat.with_structured_output(Colour, method=method)  # type: ignore[arg-type]
    colour = structured.invoke("Name a colour.")
    assert isinstance(colour, Colour) and colour.name


def test_structured_output_from_a_json_schema_with_the_raw_message(chat: ChatAnthropic) -> None:
    raw = chat.with_structured_output(Colour.model_json_schema(), method="json_schema", include_raw=True)
    answer = raw.invoke("Name a colour.")
    assert answer["parsing_error"] is None and set(answer["parsed"]) == {"name"}  # type: ignore[index,call-overload]
