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
    offered,
    tagged_calls,
)
from appliance.engine.formats.schema import GrammarBuilder, alternatives, json_object, literal, repeated

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
            fields = [("name", f"{literal(literal(name))} space"), ("arguments", args)]
            objects.append(builder.rule(f"{name}-call", json_object(fields)))
        ws = builder.ws()
        call = builder.rule("call", f"{literal(OPEN)} {ws} {alternatives(objects)} {ws} {literal(CLOSE)}")
        root = repeated(call, parallel=parallel, separator=ws)
        return Grammar(builder.build(root), (OPEN,) if choice == "auto" else ())

    def parse_calls(self, text: str, *, partial: bool) -> Parsed:
        return tagged_calls(text, partial=partial, tags=(OPEN, CLOSE), read=call_from_object)
