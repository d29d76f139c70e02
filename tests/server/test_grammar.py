"""llama-server's ``grammar`` field (GBNF) on the OpenAI chat and completion routes, against the real
daemon: the output follows it; with ``tools`` it drives sampling and the reply is still read for tool
calls, so even SmolLM2-135M emits an exact call; a bad grammar is a 400 naming why, never a crash."""

from __future__ import annotations

import json

import openai
import pytest

from tests import web
from tests.server.conftest import MODEL_ID, Daemon, error_shape_ok

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
# The generic tool format's call text (appliance/engine/tools.py), as a grammar allowing only it.
CALL_TEXT = '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}'


def _exactly(text: str) -> str:
    return f"root ::= {json.dumps(text)}"  # a JSON string of ASCII text is a GBNF literal


def test_grammar_forces_the_text_of_a_chat_and_a_completion(client: openai.OpenAI) -> None:
    chat = client.chat.completions.create(
        model=MODEL_ID, messages=ASK, max_tokens=20, extra_body={"grammar": _exactly("Sunny, 21 C.")}
    )
    assert (chat.choices[0].message.content, chat.choices[0].finish_reason) == ("Sunny, 21 C.", "stop")
    chunks = client.completions.create(
        model=MODEL_ID,
        prompt="The weather in Paris is",
        max_tokens=20,
        stream=True,
        extra_body={"grammar": 'root ::= " " ("rainy" | "sunny") "."'},
    )
    text = "".join(chunk.choices[0].text for chunk in chunks if chunk.choices)
    assert text in (" rainy.", " sunny.")


@pytest.mark.parametrize("stream", [False, True])
def test_grammar_with_tools_gives_a_parsed_call(client: openai.OpenAI, stream: bool) -> None:
    asked = {"model": MODEL_ID, "messages": ASK, "tools": [WEATHER], "max_tokens": 60}
    grammar = {"grammar": _exactly(CALL_TEXT)}
    if not stream:
        reply = client.chat.completions.create(**asked, extra_body=grammar)  # type: ignore[call-overload]
    else:  # the client's own accumulation of the streamed pieces
        with client.chat.completions.stream(**asked, extra_body=grammar) as chunks:  # type: ignore[arg-type]
            reply = chunks.get_final_completion()
    choice = reply.choices[0]
    calls, finish, content = choice.message.tool_calls or [], choice.finish_reason, choice.message.content
    assert finish == "tool_calls" and not content
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"})
    ]


def test_grammar_with_tools_forcing_words_gives_content(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL_ID,
        messages=ASK,
        tools=[WEATHER],  # type: ignore[list-item]
        max_tokens=20,
        extra_body={"grammar": _exactly("I cannot tell.")},
    )
    choice = reply.choices[0]
    assert (choice.message.content, choice.message.tool_calls, choice.finish_reason) == (
        "I cannot tell.",
        None,
        "stop",
    )


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"grammar": 'root ::= "x" item'}, "undefined rule 'item' at line 1, column 14"),
        ({"grammar": 'root ::= ("x"'}, "expecting ')'"),
        ({"grammar": "root ::= " + "(" * 30_000 + '"a"' + ")" * 30_000}, "nest deeper than 1000"),
        ({"grammar": 'root ::= "' + "a" * 70_000 + '"'}, "at most 65536"),
        ({"grammar": 'root ::= root "a" | "b"'}, "left recursion"),  # found by llama.cpp itself
        # These held the model's worker in llama.cpp's matcher for seconds a token, or for good.
        ({"grammar": "root ::= ([a-z]*){0,1000}"}, "a repetition of something that can match nothing"),
        ({"grammar": 'root ::= ("a"|"a"){0,1000}'}, "a group with alternatives repeated more than 100"),
        ({"grammar": "root ::= <no-such-token>"}, "<no-such-token> is not one token of this model"),
        ({"grammar": 'root ::= "{}"', "response_format": {"type": "json_object"}}, "one constraint"),
    ],
)
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_a_bad_grammar_is_a_400_naming_why(
    daemon: Daemon, path: str, extra: dict[str, object], reason: str
) -> None:
    asked = {"messages": ASK} if path == "/v1/chat/completions" else {"prompt": "Hello"}
    response = web.post(f"{daemon.url}{path}", json={**asked, "max_tokens": 4, "stream": True, **extra})
    assert response.status_code == 400 and error_shape_ok(path, response)
    assert reason in response.json()["error"]["message"]
    assert web.get(f"{daemon.url}/health").status_code == 200


def test_a_grammar_no_token_can_follow_is_a_400(daemon: Daemon) -> None:
    """A grammar whose text no token of the vocabulary writes (every character refused) ends the request
    as the client's error, not the server's."""
    response = web.post(
        f"{daemon.v1}/completions",
        json={"prompt": "Hello", "max_tokens": 4, "grammar": "root ::= [^\\x00-\\U0010FFFF]"},
    )
    assert response.status_code == 400 and error_shape_ok("/v1/completions", response)
    assert "allows no next token" in response.json()["error"]["message"]


def test_a_grammar_naming_a_token_of_the_model(client: openai.OpenAI) -> None:
    """``<text>`` names one token of the vocabulary (here SmolLM2's ``<|im_start|>``), as llama.cpp
    reads it."""
    reply = client.completions.create(
        model=MODEL_ID, prompt="Hello", max_tokens=4, extra_body={"grammar": 'root ::= <|im_start|> "x"'}
    )
    assert reply.choices[0].text.endswith("x") and reply.usage is not None
    assert reply.usage.completion_tokens == 3  # <|im_start|>, "x", the end of text
