"""IBM Granite 3.x: calls as one JSON list after ``<|tool_call|>``, after any words; with the
template's ``thinking`` switch on, thoughts between ``<think>`` and ``</think>`` and then the answer
between ``<response>`` and ``</response>`` (the wrapper is not part of the answer):

    <|tool_call|>[{"name": "get_weather", "arguments": {"city": "Paris"}}]
    <think>The user greets me.</think><response>Hello!</response>

Granite 4.0 writes Hermes's ``<tool_call>`` blocks instead (formats.hermes reads them). The 3.3
template lists the tools itself but never writes an earlier turn's calls: they go into its text, the
way the model wrote them.
"""

from __future__ import annotations

import json
from typing import Any

from appliance.engine.formats.base import (
    Call,
    ChatFormat,
    Grammar,
    Parsed,
    Thinking,
    call_from_object,
    held_back,
    split_thinking,
)
from appliance.engine.formats.generic import GenericFormat
from appliance.engine.formats.scan import each_call, skip_space
from appliance.engine.formats.schema import GrammarBuilder, literal, repeated

TOOL_CALL = "<|tool_call|>"
RESPONSE_OPEN, RESPONSE_CLOSE = "<response>", "</response>"


def is_granite3(source: str) -> bool:
    """The template asks for ``<|tool_call|>`` in Granite's roles (3.x; 4.0 is Hermes-like)."""
    return TOOL_CALL in source and "<|start_of_role|>" in source


class GraniteFormat(ChatFormat):
    name = "granite"
    native_tools = True
    wrapped_answer = True

    def __init__(self) -> None:
        self.thinking = Thinking("<think>", "</think>")

    def template_variables(self, *, thinking: bool | None, effort: str | None) -> dict[str, Any]:
        """The 3.3 template's ``thinking`` switch (it asks for <think> and <response> only without tools)."""
        return {} if thinking is None else {"thinking": thinking}

    def markers(self) -> tuple[str, ...]:
        return (*super().markers(), TOOL_CALL, RESPONSE_OPEN, RESPONSE_CLOSE)

    def history_calls(self, message: dict[str, Any]) -> dict[str, Any]:
        """The calls written into the turn's text after ``<|tool_call|>``, as the model wrote them."""
        ready = super().history_calls(message)
        listed = [
            {"name": call["function"].get("name"), "arguments": call["function"].get("arguments")}
            for call in ready.pop("tool_calls")
        ]
        written = TOOL_CALL + json.dumps(listed, ensure_ascii=False)
        return {**ready, "content": (ready.get("content") or "") + written}

    def grammar(self, tools: list[dict[str, Any]], choice: str, *, parallel: bool) -> Grammar | None:
        builder = GrammarBuilder({"name": 0, "arguments": 1})

        def one(name: str, args: str) -> str:
            named = literal(json.dumps(name, ensure_ascii=False))
            return f'"{{" space "\\"name\\": " {named} ", \\"arguments\\": " {args} "}}"'

        calls = repeated(each_call(builder, tools, choice, one), parallel=parallel, separator='", "')
        root = f'{literal(TOOL_CALL)} "[" {calls} "]"'
        return Grammar(builder.build(root), (TOOL_CALL,) if choice == "auto" else ())

    def parse(self, text: str, *, partial: bool, thinking: bool, tools: bool) -> Parsed:
        reasoning, rest, done = split_thinking(text, self.thinking, inside=thinking, partial=partial)
        if not done:
            return Parsed(reasoning=reasoning)
        parsed = self.parse_calls(rest, partial=partial) if tools else Parsed(_answer(rest, partial))
        parsed.reasoning = reasoning
        return parsed

    def parse_calls(self, text: str, *, partial: bool) -> Parsed:
        first = text.find(TOOL_CALL)
        if first < 0:
            return Parsed(_answer(text, partial))
        parsed = Parsed(_answer(text[:first], False))
        i = skip_space(text, first + len(TOOL_CALL))
        if text.startswith("[", i):
            # The list is the generic reply's list of calls (objects with a name and arguments).
            parsed.calls = GenericFormat._calls(text, i)
        elif text.startswith("{", i):  # a lone call without its list
            call, _ = call_from_object(text, i)
            parsed.calls = [call] if isinstance(call, Call) else []
        return parsed


def _answer(text: str, partial: bool) -> str:
    """The words of the reply, out of the ``<response>`` wrapper when the model wrote one; while
    ``partial``, less what could still become a tag."""
    body = text
    lead = text.lstrip()
    if lead.startswith(RESPONSE_OPEN):
        body = lead[len(RESPONSE_OPEN) :]
    elif partial and RESPONSE_OPEN.startswith(lead):
        return ""  # nothing yet, or the first characters of the wrapper
    close = body.find(RESPONSE_CLOSE)
    if close >= 0:
        return body[:close]  # the answer ends there (the model ends its turn after it)
    if partial:
        return body[: len(body) - held_back(body, [RESPONSE_CLOSE, TOOL_CALL])]
    return body
