"""LangChain's ChatOpenAI (the OpenAI dialect) and ChatOllama (Ollama's), unchanged, against the session's
daemon: invoke, stream, a tool call, and with_structured_output by every method each offers. The 135M
model is weak: prompts are plain, calls forced where the dialect can force them, replies short; the
assertions are on structure. The libraries are imported in the fixtures: collecting the suite stays
quick, and a run that leaves these tests out never pays for LangChain's imports."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, Field

from tests.server.conftest import MODEL_ID, Daemon

# Room for a whole call or object ({"tool_calls": [{"name": ..., "arguments": {...}}]} is ~30 tokens).
MAX_TOKENS = 60


class Weather(BaseModel):
    """The weather asked about."""

    city: str = Field(description="the city")


def get_weather(city: str) -> str:
    """Get the weather for a city."""
    return f"sunny in {city}"


@pytest.fixture(scope="module", params=["ChatOpenAI", "ChatOllama"])
def chat_model(request: pytest.FixtureRequest, daemon: Daemon) -> Any:
    if request.param == "ChatOpenAI":
        from langchain_openai import ChatOpenAI

        return ChatOpenAI(base_url=daemon.v1, api_key="unused", model=MODEL_ID, max_tokens=MAX_TOKENS,  # type: ignore[arg-type]
                          temperature=0, max_retries=0, timeout=120)  # fmt: skip
    from langchain_ollama import ChatOllama

    return ChatOllama(base_url=daemon.url, model=MODEL_ID, num_predict=MAX_TOKENS, temperature=0)


def test_invoke_and_stream(chat_model: Any) -> None:
    answer = chat_model.invoke("Say hi")
    assert isinstance(answer.content, str) and answer.content
    assert answer.usage_metadata["input_tokens"] > 0 and answer.usage_metadata["output_tokens"] > 0
    chunks = list(chat_model.stream("Say hi"))
    assert len(chunks) > 2
    assert "".join(chunk.content for chunk in chunks) == answer.content  # temperature 0


def test_bind_tools_with_a_forced_call(chat_model: Any) -> None:
    # ChatOllama passes tool_choice nowhere (Ollama's API has none): the model chooses, at temperature 0.
    tooled = chat_model.bind_tools([get_weather], tool_choice="get_weather")
    answer = tooled.invoke("What is the weather in Paris?")
    assert [call["name"] for call in answer.tool_calls] == ["get_weather"]
    assert isinstance(answer.tool_calls[0]["args"].get("city"), str)


@pytest.mark.parametrize("method", ["json_schema", "function_calling", "json_mode"])
def test_with_structured_output(chat_model: Any, method: str) -> None:
    structured = chat_model.with_structured_output(Weather, method=method)
    # json_mode sends no schema: the prompt has to name the field.
    prompt = (
        "Give the weather for Paris as JSON with a city field."
        if method == "json_mode"
        else "Weather in Paris?"
    )
    answer = structured.invoke(prompt)
    assert isinstance(answer, Weather) and answer.city
