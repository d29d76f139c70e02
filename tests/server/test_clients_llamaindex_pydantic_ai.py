"""LlamaIndex's Ollama LLM (Ollama's /api/chat) and pydantic-ai's OpenAIChatModel (the OpenAI dialect),
unchanged, against the session's daemon: chat, a stream, structured output. Imported in the fixtures, so
collecting the suite does not pay for them. (LlamaIndex's OpenAILike cannot be installed beside `llm`,
the embedded model's package: tests/server/test_clients_side_installed.py runs it apart.)"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from tests.server.conftest import MODEL_ID, Daemon


class City(BaseModel):
    """A city."""

    name: str


@pytest.fixture(scope="module")
def llama_index_llm(daemon: Daemon) -> Any:
    from llama_index.llms.ollama import Ollama

    # context_window left at -1, the LLM asks /api/show for the model's trained context (8,192 here) and
    # sends it as num_ctx with every request: the daemon would reload the model with slots that large,
    # under every other test of the session. 2,048 fits one slot.
    return Ollama(model=MODEL_ID, base_url=daemon.url, request_timeout=120, temperature=0,
                  context_window=2048, additional_kwargs={"num_predict": 40})  # fmt: skip


def test_llama_index_chat_stream_and_structured_predict(llama_index_llm: Any) -> None:
    from llama_index.core.llms import ChatMessage
    from llama_index.core.prompts import PromptTemplate

    hi = [ChatMessage(role="user", content="Say hi")]
    answer = llama_index_llm.chat(hi)
    assert answer.message.content and answer.raw["done_reason"] in ("stop", "length")
    streamed = list(llama_index_llm.stream_chat(hi))
    assert len(streamed) > 2 and streamed[-1].message.content == answer.message.content
    city = llama_index_llm.structured_predict(
        City, PromptTemplate("Name a city in {country}."), country="France"
    )
    assert isinstance(city, City) and city.name


@pytest.fixture(scope="module")
def pydantic_ai_model(daemon: Daemon) -> Any:
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    return OpenAIChatModel(MODEL_ID, provider=OpenAIProvider(base_url=daemon.v1, api_key="unused"))


def test_pydantic_ai_text_and_structured_output(pydantic_ai_model: Any) -> None:
    from pydantic_ai import Agent
    from pydantic_ai.output import NativeOutput, ToolOutput
    from pydantic_ai.settings import ModelSettings

    settings = ModelSettings(max_tokens=40, temperature=0)
    text = Agent(pydantic_ai_model, model_settings=settings).run_sync("Say hi")
    assert isinstance(text.output, str) and text.output and text.usage.output_tokens > 0
    # Native: response_format json_schema; Tool (pydantic-ai's default): a forced call of its
    # final_result tool. The model is too small to be right, not to be well-formed.
    for kind in (NativeOutput, ToolOutput):
        agent = Agent(pydantic_ai_model, output_type=kind(City), model_settings=settings)
        city = agent.run_sync("Name a city in France.").output
        assert isinstance(city, City) and city.name
