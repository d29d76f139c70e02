"""LlamaIndex's OpenAILike, unchanged, against a daemon: run in a process of its own whose path puts
openai 2.x first (tests/server/test_clients_side_installed.py installs it there), as that package needs
openai<3 and the embedded model's `llm` needs openai>3. Prints what it got as JSON.

    python tests/clients/openai_like.py BASE_URL MODEL
"""

from __future__ import annotations

import json
import sys

import openai
from llama_index.core.llms import ChatMessage
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool
from llama_index.llms.openai_like import OpenAILike
from pydantic import BaseModel


class City(BaseModel):
    name: str


def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny in {city}"


def main() -> None:
    base, model = sys.argv[1], sys.argv[2]
    llm = OpenAILike(model=model, api_base=f"{base}/v1", api_key="unused", is_chat_model=True,
                     is_function_calling_model=True, context_window=2048, max_tokens=40,
                     temperature=0)  # fmt: skip
    hi = [ChatMessage(role="user", content="Say hi")]
    city = llm.structured_predict(City, PromptTemplate("Name a city in {country}."), country="France")
    answer = llm.chat_with_tools([FunctionTool.from_defaults(fn=get_weather)],
                                 user_msg="What is the weather in Paris?", tool_required=True)  # fmt: skip
    calls = llm.get_tool_calls_from_response(answer, error_on_no_tool_call=False)
    print(json.dumps({
        "openai": openai.__version__,
        "chat": llm.chat(hi).message.content,
        "stream": "".join(r.delta or "" for r in llm.stream_chat(hi)),
        "complete": llm.complete("The capital of France is").text,
        "city": city.name,
        "calls": [[c.tool_name, c.tool_kwargs] for c in calls],
    }))  # fmt: skip


if __name__ == "__main__":
    main()
