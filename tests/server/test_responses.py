"""OpenAI's Responses API (`POST /v1/responses`) driven by the official `openai` SDK and the OpenAI
Agents SDK against the session's daemon: text and message input, instructions, structured output, a
function tool and its result, the streamed events in their documented order (and the SDK's own
accumulation of them), previous_response_id with the kept responses, and errors in OpenAI's shape.
The 135M model is weak: calls are forced with tool_choice, and the tests check structure, not wisdom."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pytest
from pydantic import BaseModel, Field

from tests import web
from tests.server.conftest import MODEL_ID, Daemon, error_shape_ok

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
FORCED = {"type": "function", "name": "get_weather"}
ASK = "What is the weather in Paris?"


def test_text_input_gives_a_message_and_usage(client: openai.OpenAI) -> None:
    response = client.responses.create(model=MODEL_ID, input="Say hello.", max_output_tokens=8, temperature=0)
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status in ("completed", "incomplete") and response.model == MODEL_ID
    [message] = response.output
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert response.output_text and message.content[0].type == "output_text"
    usage = response.usage
    assert usage is not None and usage.input_tokens > 0 and 1 <= usage.output_tokens <= 8
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


def test_messages_and_instructions_make_the_chat_s_prompt(client: openai.OpenAI) -> None:
    """The instructions are the system message, the input the messages: the prompt is the chat's own."""
    parts = [{"role": "user", "content": [{"type": "input_text", "text": "Name a colour."}]}]
    told = client.responses.create(model=MODEL_ID, input=parts, max_output_tokens=4, temperature=0,  # type: ignore[arg-type]
                                   instructions="You answer in one word, in French.")  # fmt: skip
    chat = client.chat.completions.create(model=MODEL_ID, max_tokens=4, temperature=0, messages=[
        {"role": "system", "content": "You answer in one word, in French."},
        {"role": "user", "content": "Name a colour."}])  # fmt: skip
    assert told.usage is not None and chat.usage is not None
    assert told.usage.input_tokens == chat.usage.prompt_tokens
    assert told.output_text == chat.choices[0].message.content
    assert told.instructions == "You answer in one word, in French."


def test_cut_by_max_output_tokens_is_incomplete(client: openai.OpenAI) -> None:
    response = client.responses.create(model=MODEL_ID, input="Tell me a long story.", max_output_tokens=3)
    assert response.status == "incomplete" and response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage is not None and response.usage.output_tokens == 3
    assert response.output[0].status == "incomplete"  # type: ignore[union-attr]


class City(BaseModel):
    name: str = Field(max_length=12)


def test_a_json_schema_format_is_parsed(client: openai.OpenAI) -> None:
    response = client.responses.parse(model=MODEL_ID, input="Name a city.", text_format=City,
                                      max_output_tokens=24, temperature=0)  # fmt: skip
    assert response.status == "completed"
    assert isinstance(response.output_parsed, City) and response.output_parsed.name
    assert response.text is not None and response.text.format is not None
    assert response.text.format.type == "json_schema"
    loose = client.responses.create(model=MODEL_ID, input="A JSON object about Paris.", max_output_tokens=16,
                                    text={"format": {"type": "json_object"}}, temperature=0)  # fmt: skip
    assert loose.output_text.startswith("{")  # an object begins (16 tokens may not end it)


def test_a_forced_function_call_and_its_output_fed_back(client: openai.OpenAI) -> None:
    first = client.responses.create(model=MODEL_ID, input=ASK, tools=[WEATHER], tool_choice=FORCED,  # type: ignore[list-item,arg-type]
                                    max_output_tokens=40, temperature=0)  # fmt: skip
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.call_id and call.id and call.id.startswith("fc_")
    assert isinstance(json.loads(call.arguments), dict)
    result = {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"}
    # Stateless: the whole conversation sent again, the call item as it came. (With "auto" this model
    # calls again: "none" asks for words.)
    words: Any = {"model": MODEL_ID, "tools": [WEATHER], "tool_choice": "none", "max_output_tokens": 6,
                  "temperature": 0}  # fmt: skip
    again = client.responses.create(**words, input=[{"role": "user", "content": ASK}, call.model_dump(),
                                                    result])  # fmt: skip
    assert again.output[0].type == "message" and again.output_text
    # Stateful: only the result, after the kept response.
    chained = client.responses.create(**words, previous_response_id=first.id, input=[result])
    assert chained.previous_response_id == first.id and chained.output_text == again.output_text
    assert chained.usage is not None and again.usage is not None
    assert chained.usage.input_tokens == again.usage.input_tokens


def _event_kinds(events: list[Any]) -> list[str]:
    """The event types, runs of deltas counted as one."""
    kinds: list[str] = []
    for event in events:
        if not (kinds and event.type.endswith(".delta") and kinds[-1] == event.type):
            kinds.append(event.type)
    return kinds


def test_a_stream_follows_the_documented_order(client: openai.OpenAI) -> None:
    whole = client.responses.create(model=MODEL_ID, input="Say hello.", max_output_tokens=10, temperature=0)
    events = list(client.responses.create(model=MODEL_ID, input="Say hello.", max_output_tokens=10,
                                          temperature=0, stream=True))  # fmt: skip
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert _event_kinds(events) == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done",
        "response.completed" if whole.status == "completed" else "response.incomplete",
    ]  # fmt: skip
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert text == whole.output_text
    final = events[-1].response
    assert final.output_text == text and final.usage.output_tokens == whole.usage.output_tokens  # type: ignore[union-attr]
    assert final.id == events[0].response.id and final.output[0].id == events[2].item.id


def test_the_sdk_accumulates_a_streamed_call(client: openai.OpenAI, daemon: Daemon) -> None:
    """As Codex sends its tools: some in a namespace, and a hosted web search (left out, logged)."""
    tools: Any = [{"type": "namespace", "name": "weather_tools", "description": "", "tools": [WEATHER]},
                  {"type": "web_search", "external_web_access": False}]  # fmt: skip
    with client.responses.stream(model=MODEL_ID, input=ASK, tools=tools, tool_choice=FORCED,  # type: ignore[arg-type]
                                 max_output_tokens=40, temperature=0) as stream:  # fmt: skip
        events = list(stream)
        final = stream.get_final_response()
    assert "hosted tools left out (nothing here runs them): web_search" in daemon.log()
    kinds = _event_kinds(events)
    assert kinds[2:6] == ["response.output_item.added", "response.function_call_arguments.delta",
                          "response.function_call_arguments.done", "response.output_item.done"]  # fmt: skip
    [call] = final.output
    assert call.type == "function_call" and call.name == "get_weather" and call.namespace == "weather_tools"
    assert events[2].item.namespace == "weather_tools"  # type: ignore[union-attr]
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert call.arguments == deltas and isinstance(json.loads(deltas), dict)
    assert client.responses.retrieve(final.id).output[0].id == call.id  # kept: store is the default


def test_kept_responses_chain_and_can_be_deleted(client: openai.OpenAI, daemon: Daemon) -> None:
    first = client.responses.create(model=MODEL_ID, input="My name is Ada.", max_output_tokens=6)
    second = client.responses.create(model=MODEL_ID, input="What is my name?", max_output_tokens=6,
                                     previous_response_id=first.id)  # fmt: skip
    assert first.usage is not None and second.usage is not None
    # The earlier input and output came first in the prompt (and the instructions were not carried).
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    kept = client.responses.retrieve(first.id)
    assert kept.id == first.id and kept.output_text == first.output_text
    assert client.responses.delete(first.id) is None  # the SDK returns nothing on success
    with pytest.raises(openai.NotFoundError) as gone:
        client.responses.retrieve(first.id)
    assert gone.value.code == "not_found"
    with pytest.raises(openai.NotFoundError) as previous:
        client.responses.create(model=MODEL_ID, input="And?", previous_response_id=first.id)
    assert previous.value.param == "previous_response_id"
    unkept = client.responses.create(model=MODEL_ID, input="Hi", max_output_tokens=2, store=False)
    assert unkept.store is False
    missing = web.get(f"{daemon.v1}/responses/{unkept.id}", timeout=10)
    assert missing.status_code == 404 and error_shape_ok("/v1/responses", missing)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"input": [{"type": "web_search_call", "id": "ws_1"}]}, "input.0: items of type 'web_search_call'"),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
         "input.0.content.0: parts of type 'input_file' are not supported"),
        ({"input": "x", "tools": [{"type": "custom", "name": "x"}]}, "tools.0: Input tag 'custom' found"),
        ({"input": "x", "background": True}, "background responses are not supported"),
        ({"max_output_tokens": 4}, "missing required field 'input'"),
        ({"input": "x", "tool_choice": "required"}, "tool_choice needs tools"),
    ],
)  # fmt: skip
def test_bad_input_is_a_400_in_openai_s_shape(daemon: Daemon, extra: dict[str, Any], expected: str) -> None:
    answer = web.post(f"{daemon.v1}/responses", json={"model": MODEL_ID, **extra}, timeout=30)
    assert answer.status_code == 400 and error_shape_ok("/v1/responses", answer)
    assert expected in answer.json()["error"]["message"]


def test_an_unknown_model_is_a_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.create(model="no-such-model", input="Hi")
    assert missing.value.code == "model_not_found"


# The OpenAI Agents SDK: one agent with one function tool, over each of its two OpenAI models.


def _agent_run(daemon: Daemon, api: str, streamed: bool = False) -> tuple[Any, list[str]]:
    from agents import Agent, ModelSettings, Runner, function_tool, set_tracing_disabled
    from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel
    from agents.models.openai_responses import OpenAIResponsesModel

    set_tracing_disabled(True)  # nothing is sent to OpenAI's tracing endpoint
    cities: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        cities.append(city)
        return f"Sunny in {city}"

    api_client = openai.AsyncOpenAI(base_url=daemon.v1, api_key="unused", max_retries=0)
    model_class = OpenAIResponsesModel if api == "responses" else OpenAIChatCompletionsModel
    agent = Agent(
        name="weather", instructions="You report the weather.", tools=[get_weather],
        model=model_class(model=MODEL_ID, openai_client=api_client),
        model_settings=ModelSettings(tool_choice="required", max_tokens=40, temperature=0),
        tool_use_behavior="stop_on_first_tool",  # the tool's answer is the agent's: one model call
    )  # fmt: skip

    async def run() -> Any:
        if not streamed:
            return await Runner.run(agent, ASK, max_turns=2)
        result = Runner.run_streamed(agent, ASK, max_turns=2)
        async for _ in result.stream_events():
            pass
        return result

    return asyncio.run(run()), cities


@pytest.mark.parametrize(("api", "streamed"), [("responses", False), ("responses", True), ("chat", False)])
def test_an_agent_calls_its_tool(daemon: Daemon, api: str, streamed: bool) -> None:
    result, cities = _agent_run(daemon, api, streamed)
    assert len(cities) == 1 and result.final_output == f"Sunny in {cities[0]}"
    kinds = [item.type for item in result.new_items]
    assert kinds == ["tool_call_item", "tool_call_output_item"]
