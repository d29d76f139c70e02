"""Qwen3-Coder's XML-style tool calls (also Qwen3.5 and Nemotron Nano 3, which think first): each call
names its function and writes each parameter's value as raw text on lines of its own.

    I'll run it.
    <tool_call>
    <function=run>
    <parameter=code>
    print("hi")
    </parameter>
    <parameter=timeout_s>
    5
    </parameter>
    </function>
    </tool_call>

A value is text, typed by the tool's JSON schema: a string parameter's value is taken as written, any
other is read as JSON. The arguments are streamed as JSON built from the completed parameters, so they
only grow: ``{"code": "print(\\"hi\\")"``, then ``, "timeout_s": 5``, then ``}``.
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
    held_back,
    offered,
    tagged_calls,
)
from appliance.engine.formats.schema import GrammarBuilder, alternatives, literal, text_until

OPEN, CLOSE = "<tool_call>", "</tool_call>"
FUNCTION, FUNCTION_END = "<function=", "</function>"
PARAMETER, VALUE_END = "<parameter=", "\n</parameter>"


def schema_types(schema: dict[str, Any]) -> set[str]:
    """The JSON types a parameter's schema allows (empty: any, or not said)."""
    declared = schema.get("type")
    types = {declared} if isinstance(declared, str) else set(declared or ())
    for key in ("anyOf", "oneOf"):
        for option in schema.get(key) or ():
            if isinstance(option, dict):
                types |= schema_types(option)
    if "enum" in schema and not types:
        types = {"string"} if all(isinstance(v, str) for v in schema["enum"]) else set()
    return {str(t) for t in types}


def typed_value(raw: str, schema: dict[str, Any] | None) -> str:
    """A parameter's raw text as JSON: a string when the schema allows only strings (or the text is
    not JSON), else the JSON value it writes (numbers, booleans, objects, arrays)."""
    types = schema_types(schema or {})
    if types != {"string"}:
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        else:
            if not isinstance(value, str):
                return json.dumps(value, ensure_ascii=False)
    return json.dumps(raw, ensure_ascii=False)


class Qwen3CoderFormat(ChatFormat):
    name = "qwen3-coder"
    native_tools = True

    def __init__(self, *, thinks: bool = False, tools: list[dict[str, Any]] | None = None) -> None:
        self.thinking = Thinking("<think>", "</think>") if thinks else None
        self._schemas: dict[str, dict[str, Any]] = {}
        for tool in tools or ():
            fn = tool.get("function") or {}
            properties = (fn.get("parameters") or {}).get("properties")
            self._schemas[str(fn.get("name"))] = properties if isinstance(properties, dict) else {}
        self._bare = [] if thinks else [f"{FUNCTION}{name}>" for name in self._schemas]

    def for_tools(self, tools: list[dict[str, Any]]) -> Qwen3CoderFormat:
        return Qwen3CoderFormat(thinks=self.thinking is not None, tools=tools)

    def markers(self) -> tuple[str, ...]:
        return (*super().markers(), OPEN, CLOSE)

    def grammar(self, tools: list[dict[str, Any]], choice: str, *, parallel: bool) -> Grammar | None:
        builder = GrammarBuilder()
        text = text_until(builder, "parameter-text", VALUE_END + "\n")
        functions = []
        for tool in offered(tools, choice):
            fn = tool["function"]
            name = fn["name"]
            schema = fn.get("parameters") or {}
            properties = schema.get("properties") or {}
            required = [key for key in properties if key in (schema.get("required") or ())]
            rules = {}
            for key, prop in properties.items():
                types = schema_types(prop)
                value = text
                if types and "string" not in types:  # JSON, checked by the schema
                    value = f"{builder.json(prop, f'{name}-{key}')} {literal(VALUE_END + chr(10))}"
                opening = literal(f"{PARAMETER}{key}>\n")
                rules[key] = builder.rule(f"{name}-{key}-parameter", f"{opening} {value}")
            optional = [rules[key] for key in properties if key not in required]
            args = " ".join(rules[key] for key in required)
            if optional:
                args += f" {alternatives(optional)}*"
            if not properties:  # any parameters, as text
                args = f'( {literal(PARAMETER)} [^>\\n]+ ">\\n" {text} )*'
            functions.append(
                builder.rule(
                    f"{name}-function",
                    f"{literal(f'{FUNCTION}{name}>{chr(10)}')} {args} {literal(FUNCTION_END + chr(10))}",
                )
            )
        body = f"{alternatives(functions)} {literal(CLOSE)}"
        call = builder.rule("call", f"{literal(OPEN + chr(10))} {body}")
        first, triggers = call, [OPEN]
        if self.thinking is None:
            # Qwen3-Coder sometimes leaves out its first call's <tool_call> (llama.cpp allows it too).
            first = builder.rule("first-call", f"{literal(OPEN + chr(10))}? {body}")
            triggers += [f"{FUNCTION}{t['function']['name']}>" for t in offered(tools, choice)]
        root = f'{first} ( "\\n"? {call} )*' if parallel else first
        return Grammar(builder.build(root), tuple(triggers) if choice == "auto" else ())

    def parse_calls(self, text: str, *, partial: bool) -> Parsed:
        def read(whole: str, start: int) -> tuple[Call | None, int | None]:
            return self._call(whole, start, partial=partial)

        bare = self._bare_call(text)
        if bare < 0:
            parsed = tagged_calls(text, partial=partial, tags=(OPEN, CLOSE), read=read)
            if partial and not parsed.calls:
                parsed.content = parsed.content[: len(parsed.content) - held_back(parsed.content, self._bare)]
            return parsed
        # A first call without its <tool_call>: the rest is read as usual after its </tool_call>.
        call, end = self._call(text, bare, partial=partial)
        parsed = Parsed(text[:bare], calls=[call] if call is not None else [])
        close = text.find(CLOSE, end) if end is not None else -1
        if close >= 0:
            rest = tagged_calls(text[close + len(CLOSE) :], partial=partial, tags=(OPEN, CLOSE), read=read)
            parsed.calls += rest.calls
            if rest.content.strip():
                parsed.content += rest.content
        return parsed

    def _bare_call(self, text: str) -> int:
        """Where a call opened by ``<function=NAME>`` of an offered tool starts before any
        ``<tool_call>`` (-1: none). Only the non-thinking Qwen3-Coder does this."""
        limit = text.find(OPEN)
        found = [at for opener in self._bare if (at := text.find(opener)) >= 0 and (limit < 0 or at < limit)]
        return min(found, default=-1)

    def _call(self, text: str, start: int, *, partial: bool) -> tuple[Call | None, int | None]:
        """The call whose ``<function=`` follows ``text[start:]`` (white space before it), as far as
        it is written, and the index past its ``</function>`` (None while it is open)."""
        i = _skip(text, start)
        if not text.startswith(FUNCTION, i):
            return None, None
        name_end = text.find(">", i)
        if name_end < 0:
            return None, None
        name = text[i + len(FUNCTION) : name_end].strip()
        schemas = self._schemas.get(name, {})
        fields: list[str] = []
        i = name_end + 1
        end: int | None = None
        while True:
            i = _skip(text, i)
            if text.startswith(FUNCTION_END, i):
                end = i + len(FUNCTION_END)
                break
            if not text.startswith(PARAMETER, i):
                break  # still being written, or not this format: the call stands as it is
            key_end = text.find(">", i)
            if key_end < 0:
                break
            key = text[i + len(PARAMETER) : key_end].strip()
            value_start = key_end + 1 + (text[key_end + 1 : key_end + 2] == "\n")
            value_end = text.find(VALUE_END, value_start - 1)
            if value_end < 0:
                if not partial:  # the text is whole: the last value runs to its end
                    fields.append(_field(key, text[value_start:].rstrip("\n"), schemas))
                break
            fields.append(_field(key, text[value_start:value_end], schemas))
            i = value_end + len(VALUE_END)
        closed = end is not None or not partial
        return Call(name, "{" + ", ".join(fields) + ("}" if closed else "")), end


def _field(key: str, raw: str, schemas: dict[str, Any]) -> str:
    return f"{json.dumps(key, ensure_ascii=False)}: {typed_value(raw, schemas.get(key))}"


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


__all__ = ["Qwen3CoderFormat", "schema_types", "typed_value"]
