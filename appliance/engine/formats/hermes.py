"""Hermes-style tool calls (NousResearch Hermes 2 Pro / 3, Qwen2.5, Qwen3, QwQ, SmolLM3): each call is a
JSON object ``{"name": ..., "arguments": {...}}`` between ``<tool_call>`` and ``</tool_call>``, after
any text; Qwen3 and QwQ think first, between ``<think>`` and ``</think>``.

    I'll check.<tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>
"""

from __future__ import annotations

from typing import Any

from appliance.engine.formats.base import (
    ChatFormat,
    Grammar,
    Parsed,
    Thinking,
    call_from_object,
    held_back,
    offered,
)
from appliance.engine.formats.schema import GrammarBuilder, alternatives, literal, repeated

OPEN, CLOSE = "<tool_call>", "</tool_call>"


class HermesFormat(ChatFormat):
    name = "hermes"
    native_tools = True

    def __init__(self, *, thinks: bool = False) -> None:
        self.thinking = Thinking("<think>", "</think>") if thinks else None

    def markers(self) -> tuple[str, ...]:
        return (*super().markers(), OPEN, CLOSE)

    def grammar(self, tools: list[dict[str, Any]], choice: str, *, parallel: bool) -> Grammar | None:
        builder = GrammarBuilder({"name": 0, "arguments": 1})
        objects = []
        for tool in offered(tools, choice):
            name = tool["function"]["name"]
            args = builder.arguments(tool)
            objects.append(
                builder.rule(
                    f"{name}-call",
                    f'"{{" space "\\"name\\"" space ":" space {literal(literal(name))} space "," space '
                    f'"\\"arguments\\"" space ":" space {args} "}}" space',
                )
            )
        ws = builder.ws()
        call = builder.rule("call", f"{literal(OPEN)} {ws} {alternatives(objects)} {ws} {literal(CLOSE)}")
        root = repeated(call, parallel=parallel, separator=ws)
        return Grammar(builder.build(root), (OPEN,) if choice == "auto" else ())

    def parse_calls(self, text: str, *, partial: bool) -> Parsed:
        first = text.find(OPEN)
        if first < 0:
            keep = len(text) - (held_back(text, [OPEN]) if partial else 0)
            return Parsed(text[:keep])
        parsed = Parsed(text[:first])
        i = first
        while i >= 0:
            call, end = call_from_object(text, i + len(OPEN))
            if call is not None:
                parsed.calls.append(call)
            if end is None:
                return parsed
            close = text.find(CLOSE, end)
            if close < 0:
                return parsed  # the closing tag is still to come (or never comes: the call stands)
            after = close + len(CLOSE)
            i = text.find(OPEN, after)
            tail = text[after:] if i < 0 else text[after:i]
            if partial and i < 0:
                tail = tail[: len(tail) - held_back(tail, [OPEN])]
            if tail.strip():  # words after a call are content too
                parsed.content += tail
        return parsed
