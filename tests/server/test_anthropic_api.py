"""Anthropic's Messages API (`POST /v1/messages`) driven by the official `anthropic` SDK against a real
daemon: whole and streamed answers, a system prompt, tool use, and its error shape."""

from __future__ import annotations

import anthropic
import pytest

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
