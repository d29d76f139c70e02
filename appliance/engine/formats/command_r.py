"""Cohere's Command R7B: thoughts between ``<|START_THINKING|>`` and ``<|END_THINKING|>``, then either
the answer between ``<|START_RESPONSE|>`` and ``<|END_RESPONSE|>`` or a JSON list of calls between
``<|START_ACTION|>`` and ``<|END_ACTION|>``:

    <|START_THINKING|>I will look up the weather.<|END_THINKING|><|START_ACTION|>[
        {"tool_call_id": "0", "tool_name": "get_weather", "parameters": {"city": "Paris"}}
    ]<|END_ACTION|>

The ``tool_call_id`` the model writes is its index in the turn ("0", "1"...), the same in every turn, so
it is not kept as the call's id: the reader makes ids that stay unique (the template numbers earlier
calls itself).
"""

from __future__ import annotations

from typing import Any

from appliance.engine.formats.base import (
    Call,
    ChatFormat,
    Grammar,
    Parsed,
    Thinking,
    call_from_object,
    held_back,
    listed_calls,
    offered,
)
from appliance.engine.formats.schema import (
    GrammarBuilder,
    alternatives,
    json_object,
    literal,
    repeated,
    text_until,
)

START_THINKING, END_THINKING = "<|START_THINKING|>", "<|END_THINKING|>"
START_RESPONSE, END_RESPONSE = "<|START_RESPONSE|>", "<|END_RESPONSE|>"
START_ACTION, END_ACTION = "<|START_ACTION|>", "<|END_ACTION|>"


def is_command_r7b(template: str) -> bool:
    """Whether ``template`` is Command R7B's (Cohere's later MoE templates answer in ``<|START_TEXT|>``
    instead of ``<|START_RESPONSE|>``)."""
    return START_ACTION in template and START_RESPONSE in template


def _action_call(text: str, start: int) -> tuple[Call | None, int | None]:
    call, end = call_from_object(text, start, name_key="tool_name", args_key="parameters")
    if call is not None:
        call.id = None  # an index, not an id (see the module)
    return call, end


class CommandR7BFormat(ChatFormat):
    name = "command-r7b"
    native_tools = True
    wrapped_answer = True

    def __init__(self) -> None:
        self.thinking = Thinking(START_THINKING, END_THINKING)

    def markers(self) -> tuple[str, ...]:
        return (*super().markers(), START_RESPONSE, END_RESPONSE, START_ACTION, END_ACTION)

    def grammar(self, tools: list[dict[str, Any]], choice: str, *, parallel: bool) -> Grammar | None:
        builder = GrammarBuilder({"tool_call_id": 0, "tool_name": 1, "parameters": 2})
        calls = []
        for tool in offered(tools, choice):
            name = tool["function"]["name"]
            args = builder.arguments(tool)
            index = '"\\"" [0-9]{1,3} "\\"" space'  # the call's index in the turn, as a string
            named = f"{literal(literal(name))} space"
            fields = [("tool_call_id", index), ("tool_name", named), ("parameters", args)]
            calls.append(builder.rule(f"{name}-call", json_object(fields)))
        # The template lays the list out over lines: "[\n    {...},\n    {...}\n]".
        gap = builder.rule("list-space", "[ \\t\\n]{0,16}")
        listed = repeated(alternatives(calls), parallel=parallel, separator=f'"," {gap}')
        action = f'{literal(START_ACTION)} "[" {gap} {listed} {gap} "]" {literal(END_ACTION)}'
        if choice == "auto":
            return Grammar(builder.build(action), (START_ACTION,))
        # Constrained from the first token: the model may still think first.
        thought = text_until(builder, "thought", END_THINKING)
        return Grammar(builder.build(f"( {literal(START_THINKING)} {thought} )? {action}"))

    def parse_calls(self, text: str, *, partial: bool) -> Parsed:
        parsed = Parsed()
        i = 0
        while True:
            found = [(at, tag) for tag in (START_RESPONSE, START_ACTION) if (at := text.find(tag, i)) >= 0]
            if not found:
                tail = text[i:]
                if partial:
                    tail = tail[: len(tail) - held_back(tail, [START_RESPONSE, START_ACTION])]
                if tail.strip() or (i == 0 and not partial):
                    parsed.content += tail  # words outside the blocks are content too
                return parsed
            at, tag = min(found)
            if text[i:at].strip():
                parsed.content += text[i:at]
            start = at + len(tag)
            if tag == START_RESPONSE:
                end = text.find(END_RESPONSE, start)
                if end < 0:
                    body = text[start:]
                    if partial:
                        body = body[: len(body) - held_back(body, [END_RESPONSE])]
                    parsed.content += body
                    return parsed
                parsed.content += text[start:end]
                i = end + len(END_RESPONSE)
                continue
            calls, listed_end = listed_calls(text, start, _action_call)
            parsed.calls += [call for call, _ in calls]
            close = text.find(END_ACTION, listed_end) if listed_end is not None else -1
            if close < 0:
                return parsed  # the list or its closing tag is still to come
            i = close + len(END_ACTION)


__all__ = ["CommandR7BFormat", "is_command_r7b"]
