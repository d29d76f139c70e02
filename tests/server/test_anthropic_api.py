"""Anthropic's Messages API (`POST /v1/messages`, `POST /v1/messages/count_tokens`) driven by the official
`anthropic` SDK against a real daemon: whole and streamed answers, a system prompt, tool use with every
tool_choice, structured output, stop sequences, token counts, and its error shape everywhere."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import pytest
from pydantic import BaseModel

from tests import web
from tests.server.conftest import MODEL_ID, NO_EOS_BIAS, Daemon


@pytest.fixture(scope="module")
def client(daemon: Daemon) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=daemon.url, api_key="unused", max_retries=0)


ASK = [{"role": "user", "content": "What is the capital of France?"}]
# The SDK no longer takes sampling settings; the endpoint still reads them, as older clients send them.
GREEDY = {"temperature": 0}


def test_a_whole_answer(client: anthropic.Anthropic) -> None:
    message = client.messages.create(model=MODEL_ID, max_tokens=12, messages=ASK, extra_body=GREEDY,
                                     system="You answer in one word.")  # fmt: skip
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert message.content and message.content[0].type == "text" and message.content[0].text
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.input_tokens > 0 and 1 <= message.usage.output_tokens <= 12


def test_a_streamed_answer_matches_the_whole_one(client: anthropic.Anthropic) -> None:
    whole = client.messages.create(model=MODEL_ID, max_tokens=16, messages=ASK, extra_body=GREEDY)
    with client.messages.stream(model=MODEL_ID, max_tokens=16, messages=ASK, extra_body=GREEDY) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == whole.content[0].text  # type: ignore[union-attr]
    assert final.stop_reason == whole.stop_reason and final.usage.output_tokens == whole.usage.output_tokens


def test_max_tokens_is_the_stop_reason_when_cut(client: anthropic.Anthropic, daemon: Daemon) -> None:
    message = client.messages.create(model=MODEL_ID, max_tokens=5, messages=ASK,
                                     extra_body={"logit_bias": NO_EOS_BIAS})  # fmt: skip
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 5


def test_tool_use_round_trip(client: anthropic.Anthropic) -> None:
    tools = [{"name": "get_weather", "description": "The weather in a city",
              "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                               "required": ["city"]}}]  # fmt: skip
    asked = [{"role": "user", "content": "What's the weather in Paris?"}]
    message = client.messages.create(model=MODEL_ID, max_tokens=64, messages=asked, tools=tools,
                                     tool_choice={"type": "tool", "name": "get_weather"})  # type: ignore[arg-type]  # fmt: skip
    use = next(b for b in message.content if b.type == "tool_use")
    assert message.stop_reason == "tool_use" and use.name == "get_weather" and isinstance(use.input, dict)
    result = {"type": "tool_result", "tool_use_id": use.id, "content": "Sunny, 21 C"}
    follow = client.messages.create(model=MODEL_ID, max_tokens=16, tools=tools, messages=[  # type: ignore[arg-type]
        *asked, {"role": "assistant", "content": message.content},  # type: ignore[list-item]
        {"role": "user", "content": [result]},
    ])  # fmt: skip
    assert follow.role == "assistant" and follow.content


def test_errors_are_anthropics_shape(client: anthropic.Anthropic, daemon: Daemon) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="no-such-model", max_tokens=8, messages=ASK)
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    bad = web.post(f"{daemon.url}/v1/messages", json={"model": MODEL_ID, "messages": ASK}, timeout=10)
    assert bad.status_code == 400
    error = {"type": "invalid_request_error", "message": "missing required field 'max_tokens'"}
    assert bad.json() == {"type": "error", "error": error}
    image = [{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": "x"}}]}]
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model=MODEL_ID, max_tokens=8, messages=image)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"tools": ["search"]}, "tools.0: Input should be an object"),
        ({"tools": [{"description": "no name"}]}, "missing required field 'tools.0.name'"),
        ({"stop_sequences": 5}, "stop_sequences: Input should be a valid array"),
        ({"temperature": 3}, "temperature: Input should be less than or equal to 1"),
        ({"top_k": "ten"}, "top_k: Input should be a valid integer"),
        ({"messages": [{"role": "assistant", "content": [{"type": "tool_use", "input": {}}]}]},
         "messages.0: a tool_use block needs a name"),
    ],
)  # fmt: skip
def test_wrong_types_are_400_in_anthropics_shape(
    daemon: Daemon, extra: dict[str, object], expected: str
) -> None:
    # Found by fuzzing the live daemon: some of these were 500s.
    body = {"model": MODEL_ID, "max_tokens": 4, "messages": ASK, **extra}
    response = web.post(f"{daemon.url}/v1/messages", json=body, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert expected in error["error"]["message"]


# count_tokens, structured output, tool_choice, stop_sequences, and the errors of issue 17.

WEATHER_TOOL = {"name": "get_weather", "description": "The weather in a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                                 "required": ["city"]}}  # fmt: skip
COLOUR_SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"],
                 "additionalProperties": False}  # fmt: skip
# Bodies whose prompts differ in each part count_tokens must render as /v1/messages does.
PROMPTS = {
    "plain": {"messages": ASK},
    "system blocks": {"messages": ASK, "system": [{"type": "text", "text": "Be brief."}]},
    "tools": {"messages": ASK, "tools": [WEATHER_TOOL], "tool_choice": {"type": "any"}},
    "tools offered, none chosen": {"messages": ASK, "tools": [WEATHER_TOOL], "tool_choice": {"type": "none"}},
    "a tool round": {"tools": [WEATHER_TOOL], "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get_weather",
                                           "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "Sunny"}]}]},
    "structured": {"messages": ASK,
                   "output_config": {"format": {"type": "json_schema", "schema": COLOUR_SCHEMA}}},
    "thinking and a text document": {"thinking": {"type": "adaptive"}, "messages": [
        {"role": "user", "content": [
        {"type": "document", "title": "Notes", "source": {"type": "text", "media_type": "text/plain",
                                                          "data": "Paris is in France."}},
        {"type": "text", "text": "Where is Paris?"}]}]},
}  # fmt: skip


@pytest.mark.parametrize("name", PROMPTS)
def test_count_tokens_is_the_input_tokens_of_the_same_request(client: anthropic.Anthropic, name: str) -> None:
    body: dict[str, Any] = {"model": MODEL_ID, **PROMPTS[name]}
    counted = client.messages.count_tokens(**body)
    message = client.messages.create(max_tokens=1, **body)
    assert counted.input_tokens == message.usage.input_tokens > 0
    with client.messages.stream(max_tokens=1, **body) as stream:
        started = next(event for event in stream if event.type == "message_start")
        assert started.message.usage.input_tokens == counted.input_tokens  # not 0 as it was


def test_count_tokens_grows_with_what_is_added(client: anthropic.Anthropic) -> None:
    def count(**extra: Any) -> int:
        return client.messages.count_tokens(model=MODEL_ID, messages=ASK, **extra).input_tokens

    brief = count(system="Be brief.")
    assert brief < count(system="Be brief. Answer as a geographer would, naming the country too.")
    assert brief + 20 < count(system="Be brief.", tools=[WEATHER_TOOL], tool_choice={"type": "auto"})


class Colour(BaseModel):
    name: str


def test_structured_output_is_parsed_by_the_sdk(client: anthropic.Anthropic) -> None:
    # Greedy: at the default temperature of 1 the 135M model may write past max_tokens inside the string.
    parsed = client.messages.parse(model=MODEL_ID, max_tokens=40, messages=ASK, output_format=Colour,
                                   extra_body=GREEDY)  # fmt: skip
    assert isinstance(parsed.parsed_output, Colour) and parsed.stop_reason == "end_turn"
    config = {"format": {"type": "json_schema", "schema": COLOUR_SCHEMA}}
    raw = client.messages.create(model=MODEL_ID, max_tokens=40, messages=ASK, output_config=config,  # type: ignore[arg-type]
                                 extra_body=GREEDY)  # fmt: skip
    assert set(json.loads(raw.content[0].text)) == {"name"}  # type: ignore[union-attr]
    # The beta's older spelling, a top-level output_format, as older SDKs and LangChain once sent it.
    older = client.messages.create(model=MODEL_ID, max_tokens=40, messages=ASK,
                                   extra_body={"output_format": config["format"], **GREEDY})  # fmt: skip
    assert set(json.loads(older.content[0].text)) == {"name"}  # type: ignore[union-attr]
    with pytest.raises(anthropic.BadRequestError, match="not both"):
        client.messages.create(model=MODEL_ID, max_tokens=4, messages=ASK, output_config=config,  # type: ignore[arg-type]
                               extra_body={"output_format": config["format"]})  # fmt: skip


def test_structured_output_streams_valid_json(client: anthropic.Anthropic) -> None:
    # Greedy: at the SDK's default temperature the string can run past max_tokens now and then, and a
    # reply cut at max_tokens is not whole JSON whatever the grammar.
    config = {"format": {"type": "json_schema", "schema": COLOUR_SCHEMA}}
    with client.messages.stream(model=MODEL_ID, max_tokens=40, messages=ASK, output_config=config,  # type: ignore[arg-type]
                                extra_body=GREEDY) as stream:  # fmt: skip
        text = "".join(stream.text_stream)
        stop = stream.get_final_message().stop_reason
    assert stop == "end_turn" and set(json.loads(text)) == {"name"}


@pytest.mark.parametrize(
    ("choice", "called"),
    [({"type": "any"}, True), ({"type": "none"}, False),
     ({"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}, True),
     ({"type": "auto", "disable_parallel_tool_use": False}, None)],
)  # fmt: skip
def test_every_tool_choice(client: anthropic.Anthropic, choice: dict[str, Any], called: bool | None) -> None:
    tools = [WEATHER_TOOL, {**WEATHER_TOOL, "name": "get_time", "description": "The time in a city"}]
    asked = [{"role": "user", "content": "What's the weather in Paris?"}]
    most = 8 if called is False else 40  # a call takes ~30 tokens; text is cut short, as it may be
    message = client.messages.create(model=MODEL_ID, max_tokens=most, messages=asked, tools=tools,  # type: ignore[arg-type]
                                     tool_choice=choice, extra_body=GREEDY)  # type: ignore[arg-type]  # fmt: skip
    uses = [block for block in message.content if block.type == "tool_use"]
    if called is None:  # auto: the model decides; either way the answer is well formed
        assert message.stop_reason == ("tool_use" if uses else message.stop_reason)
        return
    assert bool(uses) == called and (message.stop_reason == "tool_use") == called
    if called:
        assert len(uses) == 1 and uses[0].name in {"get_weather", "get_time"} and "city" in uses[0].input  # type: ignore[operator]
    if choice["type"] == "tool":
        assert uses[0].name == "get_weather"


def test_stop_sequences_end_the_text_and_are_named(client: anthropic.Anthropic) -> None:
    free = client.messages.create(model=MODEL_ID, max_tokens=24, messages=ASK, extra_body=GREEDY)
    text = free.content[0].text  # type: ignore[union-attr]
    words = text.split()
    assert len(words) >= 3, text
    sequence = " " + words[2]  # a stop string the greedy answer is known to write
    cut = client.messages.create(model=MODEL_ID, max_tokens=24, messages=ASK, extra_body=GREEDY,
                                 stop_sequences=["never written", sequence])  # fmt: skip
    assert (cut.stop_reason, cut.stop_sequence) == ("stop_sequence", sequence)
    assert cut.content[0].text == text[: text.index(sequence)]  # type: ignore[union-attr]
    with client.messages.stream(model=MODEL_ID, max_tokens=24, messages=ASK, extra_body=GREEDY,
                                stop_sequences=[sequence]) as stream:  # fmt: skip
        final = stream.get_final_message()
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", sequence)
    assert free.stop_sequence is None


def test_metadata_sampling_and_thinking_switches_are_accepted(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=MODEL_ID, max_tokens=4, messages=ASK, metadata={"user_id": "user-1"},
        thinking={"type": "disabled"}, output_config={"effort": "low"},
        extra_body={"top_k": 5, "top_p": 0.9, "temperature": 0.5},
    )  # fmt: skip
    assert message.content and message.usage.output_tokens <= 4
    adaptive = client.messages.create(model=MODEL_ID, max_tokens=4, messages=ASK,
                                      thinking={"type": "adaptive", "display": "omitted"})  # fmt: skip
    assert adaptive.content  # a model that does not think answers as it would


def _error(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"type", "error"} and body["type"] == "error", body
    assert set(body["error"]) == {"type", "message"} and body["error"]["message"]
    return body["error"]  # type: ignore[no-any-return]


def test_images_and_other_unreadable_blocks_are_refused_in_anthropics_shape(daemon: Daemon) -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    pdf = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}}
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        for block, said in ((image, "images are not supported"), (pdf, "application/pdf documents")):
            body = {"model": MODEL_ID, "max_tokens": 4, "messages": [{"role": "user", "content": [block]}]}
            response = web.post(f"{daemon.url}{path}", json=body, timeout=30)
            assert response.status_code == 400
            error = _error(response)
            assert error["type"] == "invalid_request_error" and said in error["message"], error
    server_tool = {"type": "web_search_20250305", "name": "web_search"}
    body = {"model": MODEL_ID, "max_tokens": 4, "messages": ASK, "tools": [server_tool]}
    response = web.post(f"{daemon.url}/v1/messages", json=body, timeout=30)
    assert response.status_code == 400 and "server tools" in _error(response)["message"]


def test_not_found_is_anthropics_shape_everywhere_under_messages(
    client: anthropic.Anthropic, daemon: Daemon
) -> None:
    with pytest.raises(anthropic.NotFoundError) as unknown_model:
        client.messages.count_tokens(model="no-such-model", messages=ASK)  # type: ignore[arg-type]
    assert unknown_model.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.NotFoundError) as batches:
        client.messages.batches.list()
    assert batches.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    assert "message batches are not supported" in batches.value.body["error"]["message"]  # type: ignore[index]
    for method, path in (("POST", "/v1/messages/batches"), ("DELETE", "/v1/messages/batches/b1"),
                         ("GET", "/v1/messages/count_tokens")):  # fmt: skip
        response = web.request(method, f"{daemon.url}{path}", timeout=10)
        assert response.status_code == 404 and _error(response)["type"] == "not_found_error"
