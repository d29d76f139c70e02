"""LiteLLM, unchanged, against the session's daemon through both of its routes here: ``openai/`` (the
OpenAI dialect at /v1) and ``ollama_chat/`` (Ollama's /api/chat): a completion, a stream, a forced tool
call. Imported in the fixture: LiteLLM's import is the slowest of the client libraries (seconds)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.server.conftest import MODEL_ID, Daemon

HI = [{"role": "user", "content": "Say hi"}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}}  # fmt: skip


@pytest.fixture(scope="module")
def litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch of its price list at import
    import litellm

    return litellm


@pytest.fixture(params=["openai", "ollama_chat"])
def route(request: pytest.FixtureRequest, daemon: Daemon) -> dict[str, str]:
    base = daemon.v1 if request.param == "openai" else daemon.url
    return {"model": f"{request.param}/{MODEL_ID}", "api_base": base, "api_key": "unused"}


def test_completion_and_stream(litellm: Any, route: dict[str, str]) -> None:
    answer = litellm.completion(messages=HI, max_tokens=8, temperature=0, **route)
    choice = answer.choices[0]
    assert choice.message.content and choice.finish_reason in ("stop", "length")
    assert answer.usage.prompt_tokens > 0 and 0 < answer.usage.completion_tokens <= 8
    chunks = list(litellm.completion(messages=HI, max_tokens=8, temperature=0, stream=True, **route))
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == choice.message.content


def test_a_forced_tool_call(litellm: Any, route: dict[str, str]) -> None:
    forced = {"type": "function", "function": {"name": "get_weather"}}
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    answer = litellm.completion(messages=messages, tools=[WEATHER], tool_choice=forced, max_tokens=60,
                                temperature=0, **route)  # fmt: skip
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and '"city"' in call.function.arguments
