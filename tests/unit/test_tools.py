"""Tool choice (appliance/engine/tools.py), and the generic format's reply schema, history and reply
parsing (appliance/engine/formats/generic.py)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from appliance.backend import ToolCall
from appliance.engine.formats.generic import GenericFormat, reply_schema
from appliance.engine.formats.reader import ReplyReader
from appliance.engine.tools import resolve_choice
from appliance.errors import InvalidRequest

GENERIC = GenericFormat()


def system_instructions(tools: list[dict[str, Any]], choice: str) -> str:
    text = GENERIC.tool_instructions(tools, choice)
    assert text is not None
    return text


def history_content(tool_calls: list[dict[str, Any]], content: str | None) -> str:
    turn = GENERIC.history_calls({"role": "assistant", "content": content, "tool_calls": tool_calls})
    assert "tool_calls" not in turn
    return str(turn["content"])


class Reply:
    def __init__(self, text: str) -> None:
        reader = ReplyReader(GENERIC, thinking=False, tools=True)
        events = reader.feed(text)
        last, self.tool_calls = reader.finish(cut=False)
        words = "".join(e.text for e in events + last if hasattr(e, "text"))
        self.content = words if words or not self.tool_calls else None


def parse_reply(text: str) -> Reply:
    return Reply(text)


WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}
TIME: dict[str, Any] = {"type": "function", "function": {"name": "get_time"}}  # no parameters at all
TOOLS = [WEATHER, TIME]


def _named(name: object) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name}}


# (tools, tool_choice, resolved)
CHOICES = [
    ([], None, None),
    ([], "auto", None),
    ([], "required", None),
    (TOOLS, "none", None),
    (TOOLS, None, "auto"),
    (TOOLS, "auto", "auto"),
    (TOOLS, "required", "required"),
    (TOOLS, _named("get_time"), "get_time"),
    ([WEATHER], _named("get_weather"), "get_weather"),
]


@pytest.mark.parametrize(("tools", "tool_choice", "resolved"), CHOICES)
def test_resolve_choice(tools: list[dict[str, Any]], tool_choice: Any, resolved: str | None) -> None:
    assert resolve_choice(tools, tool_choice) == resolved


@pytest.mark.parametrize(
    ("tool_choice", "message"),
    [
        (_named("launch_rockets"), "unknown tool: 'launch_rockets'"),
        (_named(None), "unknown tool: None"),
        ({"type": "function"}, "unknown tool"),
        ("always", "unsupported tool_choice"),
        (3, "unsupported tool_choice"),
    ],
)
def test_resolve_choice_rejects(tool_choice: Any, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message) as exc_info:
        resolve_choice(TOOLS, tool_choice)
    assert exc_info.value.param == "tool_choice"
    assert exc_info.value.status == 400


def _call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


WEATHER_CALL = _call("get_weather", city="Paris")
TIME_CALL = _call("get_time")

# (tools, choice, parallel, reply, valid)
REPLIES: list[tuple[list[dict[str, Any]], str, bool, Any, bool]] = [
    # auto: calls or words
    (TOOLS, "auto", True, {"tool_calls": [WEATHER_CALL]}, True),
    (TOOLS, "auto", True, {"tool_calls": [WEATHER_CALL, TIME_CALL]}, True),
    (TOOLS, "auto", True, {"response": "It is sunny."}, True),
    (TOOLS, "auto", True, {"response": 3}, False),
    (TOOLS, "auto", True, {"tool_calls": []}, False),
    (TOOLS, "auto", True, {}, False),
    (TOOLS, "auto", True, "It is sunny.", False),
    (TOOLS, "auto", True, {"tool_calls": [_call("launch_rockets")]}, False),
    (TOOLS, "auto", True, {"tool_calls": [_call("get_weather")]}, False),  # city is required
    (TOOLS, "auto", True, {"tool_calls": [_call("get_weather", city="Oslo", unit="k")]}, False),
    (TOOLS, "auto", True, {"tool_calls": [{"name": "get_time"}]}, False),  # arguments required
    (TOOLS, "auto", True, {"tool_calls": [{"arguments": {}}]}, False),  # name required
    # required: only calls, at least one
    (TOOLS, "required", True, {"tool_calls": [TIME_CALL]}, True),
    (TOOLS, "required", True, {"tool_calls": [TIME_CALL, WEATHER_CALL]}, True),
    (TOOLS, "required", True, {"response": "No."}, False),
    (TOOLS, "required", True, {"tool_calls": []}, False),
    # named: only that tool
    (TOOLS, "get_weather", True, {"tool_calls": [WEATHER_CALL]}, True),
    (TOOLS, "get_weather", True, {"tool_calls": [WEATHER_CALL, WEATHER_CALL]}, True),
    (TOOLS, "get_weather", True, {"tool_calls": [TIME_CALL]}, False),
    (TOOLS, "get_weather", True, {"response": "No."}, False),
    # parallel False: one call at most
    (TOOLS, "required", False, {"tool_calls": [TIME_CALL]}, True),
    (TOOLS, "required", False, {"tool_calls": [TIME_CALL, WEATHER_CALL]}, False),
    (TOOLS, "auto", False, {"tool_calls": [WEATHER_CALL, WEATHER_CALL]}, False),
    (TOOLS, "auto", False, {"response": "ok"}, True),
    ([WEATHER], "get_weather", False, {"tool_calls": [WEATHER_CALL, WEATHER_CALL]}, False),
]


@pytest.mark.parametrize(("tools", "choice", "parallel", "reply", "valid"), REPLIES)
def test_reply_schema_validates_replies(
    tools: list[dict[str, Any]], choice: str, parallel: bool, reply: Any, valid: bool
) -> None:
    schema = reply_schema(tools, choice, parallel=parallel)
    jsonschema.Draft202012Validator.check_schema(schema)
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(reply))
    assert (not errors) == valid, errors


def _call_names(call_list: dict[str, Any]) -> list[str]:
    items = call_list["items"]
    calls = items.get("anyOf", [items])
    return [c["properties"]["name"]["const"] for c in calls]


def test_reply_schema_auto_offers_calls_or_response() -> None:
    schema = reply_schema(TOOLS, "auto")

    with_calls, in_words = schema["anyOf"]
    assert with_calls["required"] == ["tool_calls"]
    assert _call_names(with_calls["properties"]["tool_calls"]) == ["get_weather", "get_time"]
    assert in_words == {
        "type": "object",
        "properties": {"response": {"type": "string"}},
        "required": ["response"],
    }


@pytest.mark.parametrize(
    ("tools", "choice", "parallel", "names", "max_items"),
    [
        (TOOLS, "required", True, ["get_weather", "get_time"], None),
        (TOOLS, "required", False, ["get_weather", "get_time"], 1),
        (TOOLS, "get_time", True, ["get_time"], None),
        (TOOLS, "get_weather", False, ["get_weather"], 1),
        ([WEATHER], "required", True, ["get_weather"], None),
    ],
)
def test_reply_schema_calls_only(
    tools: list[dict[str, Any]], choice: str, parallel: bool, names: list[str], max_items: int | None
) -> None:
    schema = reply_schema(tools, choice, parallel=parallel)

    assert "anyOf" not in schema
    assert schema["required"] == ["tool_calls"]
    call_list = schema["properties"]["tool_calls"]
    assert call_list["type"] == "array"
    assert call_list["minItems"] == 1
    assert call_list.get("maxItems") == max_items
    assert _call_names(call_list) == names


def test_reply_schema_uses_the_tool_parameters() -> None:
    call = reply_schema([WEATHER], "get_weather")["properties"]["tool_calls"]["items"]
    assert call["properties"]["arguments"] == WEATHER["function"]["parameters"]
    no_params = reply_schema([TIME], "get_time")["properties"]["tool_calls"]["items"]
    assert no_params["properties"]["arguments"] == {"type": "object"}


@pytest.mark.parametrize(
    ("choice", "mentions_response"), [("auto", True), ("required", False), ("get_time", False)]
)
def test_system_instructions(choice: str, mentions_response: bool) -> None:
    text = system_instructions(TOOLS, choice)
    assert '"name": "get_weather"' in text
    assert '"tool_calls"' in text
    assert ('"response"' in text) == mentions_response


# (model text, content, [(name, arguments as data)])
PARSED = [
    ('{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}', None, [WEATHER_CALL]),
    (
        '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Zürich"}}, '
        '{"name": "get_time", "arguments": {}}]}',
        None,
        [_call("get_weather", city="Zürich"), TIME_CALL],
    ),
    ('{"tool_calls": [{"name": "get_time"}]}', None, [TIME_CALL]),
    ('{"response": "It is sunny."}', "It is sunny.", []),
    ('  {"response": "padded"}\n', "padded", []),
    ('{"tool_calls": [WEATHER_CALL_PLACEHOLDER], "response": "both"}', "both", [WEATHER_CALL]),
    ('{"tool_calls": ["not a call", 3], "response": "x"}', "x", []),
    ("It is sunny.", "It is sunny.", []),
    ('{"tool_calls": [', '{"tool_calls": [', []),
    ("[1, 2]", "[1, 2]", []),
    ('"just a string"', '"just a string"', []),
    ("", "", []),
]


@pytest.mark.parametrize(("text", "content", "calls"), PARSED)
def test_parse_reply(text: str, content: str | None, calls: list[dict[str, Any]]) -> None:
    text = text.replace("WEATHER_CALL_PLACEHOLDER", json.dumps(WEATHER_CALL))

    reply = parse_reply(text)

    assert reply.content == content
    assert [(c.name, json.loads(c.arguments)) for c in reply.tool_calls] == [
        (c["name"], c["arguments"]) for c in calls
    ]
    for call in reply.tool_calls:
        assert isinstance(call, ToolCall)
        assert call.id.startswith("call_")


def test_parse_reply_gives_each_call_its_own_id() -> None:
    reply = parse_reply(json.dumps({"tool_calls": [TIME_CALL, TIME_CALL, TIME_CALL]}))
    assert len({c.id for c in reply.tool_calls}) == 3


def test_parse_reply_keeps_non_ascii_arguments_readable() -> None:
    reply = parse_reply('{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Zürich"}}]}')
    assert reply.tool_calls[0].arguments == '{"city": "Zürich"}'


def _openai_call(name: str, arguments: str | None) -> dict[str, Any]:
    function: dict[str, Any] = {"name": name}
    if arguments is not None:
        function["arguments"] = arguments
    return {"id": "call_1", "type": "function", "function": function}


# (assistant tool_calls as OpenAI sends them, content, the JSON written into the history)
HISTORY = [
    (
        [_openai_call("get_weather", '{"city": "Paris"}')],
        None,
        {"tool_calls": [WEATHER_CALL]},
    ),
    (
        [_openai_call("get_weather", '{"city": "Zürich"}'), _openai_call("get_time", "{}")],
        "Let me check.",
        {"tool_calls": [_call("get_weather", city="Zürich"), TIME_CALL], "response": "Let me check."},
    ),
    ([_openai_call("get_time", None)], "", {"tool_calls": [TIME_CALL]}),
    (
        [_openai_call("get_time", "not json")],
        None,
        {"tool_calls": [{"name": "get_time", "arguments": "not json"}]},
    ),
]


@pytest.mark.parametrize(("tool_calls", "content", "written"), HISTORY)
def test_history_content(
    tool_calls: list[dict[str, Any]], content: str | None, written: dict[str, Any]
) -> None:
    text = history_content(tool_calls, content)
    assert json.loads(text) == written
    assert "\\u" not in text  # non-ASCII stays readable to the model


@pytest.mark.parametrize(("tool_calls", "content", "written"), HISTORY[:3])
def test_history_content_round_trips_through_parse_reply(
    tool_calls: list[dict[str, Any]], content: str | None, written: dict[str, Any]
) -> None:
    reply = parse_reply(history_content(tool_calls, content))

    assert reply.content == (content or None)
    assert [(c.name, json.loads(c.arguments)) for c in reply.tool_calls] == [
        (c["function"]["name"], json.loads(c["function"].get("arguments") or "{}")) for c in tool_calls
    ]


VALID_CALL_REPLIES = [(t, c, p, r) for t, c, p, r, valid in REPLIES if valid and "tool_calls" in r]


@pytest.mark.parametrize(("tools", "choice", "parallel", "reply"), VALID_CALL_REPLIES)
def test_history_of_a_valid_reply_is_valid_again(
    tools: list[dict[str, Any]], choice: str, parallel: bool, reply: dict[str, Any]
) -> None:
    """What the model is shown of its earlier calls follows the schema it is asked to reply in."""
    parsed = parse_reply(json.dumps(reply))
    openai_calls = [_openai_call(c.name, c.arguments) for c in parsed.tool_calls]
    again = json.loads(history_content(openai_calls, None))
    jsonschema.validate(again, reply_schema(tools, choice, parallel=parallel))
