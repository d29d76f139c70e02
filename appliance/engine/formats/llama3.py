"""Llama 3.1, 3.2 and 3.3: a call is a JSON object ``{"name": ..., "parameters": {...}}``, the whole
reply or after words (as the grammar's trigger ``{"name": "`` allows), or follows ``<|python_tag|>``.
Llama 3.1 and 3.3 also call their builtin tools in Python's syntax there, and then end the turn with
``<|eom_id|>`` (the model awaits the result):

    {"name": "get_weather", "parameters": {"city": "Paris"}}
    <|python_tag|>brave_search.call(query="weather in Paris")<|eom_id|>

Code after ``<|python_tag|>`` that is neither (the ``code_interpreter`` builtin) is a call of
``python`` with ``{"code": ...}``, as llama.cpp reads it. The templates take one call per turn.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

from appliance.engine.formats.base import (
    Call,
    ChatFormat,
    Grammar,
    Parsed,
    held_back,
    object_fields,
    offered,
)
from appliance.engine.formats.schema import GrammarBuilder, alternatives, literal

PYTHON_TAG, END_OF_MESSAGE = "<|python_tag|>", "<|eom_id|>"
JSON_START = '{"name": "'
_BUILTIN = re.compile(r"\s*([A-Za-z_]\w*)\.call\(")


def is_llama3(template: str) -> bool:
    """Whether ``template`` is Llama 3.x's: tool results go in an ``ipython`` turn (Functionary v3.1
    has those too, but calls with ``<function=``)."""
    return "ipython<|end_header_id|>" in template and "<function=" not in template


def json_call(text: str, start: int) -> tuple[Call | None, int | None, bool]:
    """The call written as ``{"name": ..., "parameters": {...}}`` at ``text[start]``: the call once its
    name and the start of its parameters are written, the index past the object (None while open), and
    whether the object can still be a call (a JSON answer with other keys is not)."""
    fields, end = object_fields(text, start)
    keys = list(fields)
    if keys[:1] not in ([], ["name"], ["type"]) or (keys[:1] == ["type"] and keys[1:2] not in ([], ["name"])):
        return None, end, False
    name_span = fields.get("name")
    args_key = "parameters" if "parameters" in fields else "arguments" if "arguments" in fields else None
    if name_span is None or name_span[1] is None or args_key is None:
        return None, end, end is None  # a whole object with no parameters is no call
    try:
        name = json.loads(text[name_span[0] : name_span[1]])
    except ValueError:
        return None, end, False
    value_start, value_end = fields[args_key]
    return Call(str(name), text[value_start:value_end] if value_end else text[value_start:]), end, True


def python_arguments(source: str) -> str | None:
    """``key="value", n=1`` (a builtin call's Python keyword arguments) as a JSON object; None when
    they are not literals."""
    try:
        node = ast.parse(f"f({source})", mode="eval").body
    except SyntaxError:
        return None
    if not isinstance(node, ast.Call) or node.args:
        return None
    try:
        values = {str(k.arg): ast.literal_eval(k.value) for k in node.keywords}
    except ValueError:
        return None
    return json.dumps(values, ensure_ascii=False)


def closing_paren(text: str, start: int) -> int | None:
    """The index of the ``)`` closing the call whose arguments start at ``text[start]`` (Python strings
    followed), or None while it is open."""
    depth, quote, escaped = 1, "", False
    for i in range(start, len(text)):
        char = text[i]
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth == 0:
                return i
    return None


class Llama3Format(ChatFormat):
    name = "llama3"
    native_tools = True

    def markers(self) -> tuple[str, ...]:
        return (PYTHON_TAG, END_OF_MESSAGE)

    def grammar(self, tools: list[dict[str, Any]], choice: str, *, parallel: bool) -> Grammar | None:
        builder = GrammarBuilder({"name": 0, "parameters": 1})
        objects = []
        for tool in offered(tools, choice):
            name = tool["function"]["name"]
            args = builder.arguments(tool)
            opening = '{"name": ' + json.dumps(name) + ', "parameters": '
            objects.append(builder.rule(f"{name}-call", f'{literal(opening)} {args} "}}"'))
        # One call: the templates take one per turn, whatever parallel_tool_calls says.
        root = f"{literal(PYTHON_TAG)}? {alternatives(objects)}"
        return Grammar(builder.build(root), (PYTHON_TAG, JSON_START) if choice == "auto" else ())

    def parse_calls(self, text: str, *, partial: bool) -> Parsed:
        start = len(text) - len(text.lstrip())
        if text.startswith("{", start):
            call, _, possible = json_call(text, start)
            if call is not None:
                return Parsed(calls=[call])  # what follows the object (<|eom_id|>) is no content
            if possible and partial:
                return Parsed()  # a call, perhaps: its keys will say
        tag = text.find(PYTHON_TAG)
        found = text.find(JSON_START)  # after words: the grammar's trigger, so a call too
        if found > 0 and (tag < 0 or found < tag):
            call, _, possible = json_call(text, found)
            if call is not None:
                return Parsed(text[:found], calls=[call])
            if possible and partial:
                return Parsed(text[:found])
        if tag < 0:
            keep = len(text) - (held_back(text, [PYTHON_TAG, JSON_START]) if partial else 0)
            if partial and not text[:keep].strip():
                keep = 0  # white space first: a call may still follow
            return Parsed(text[:keep])
        parsed = Parsed(text[:tag])
        call = self._tagged(text, tag + len(PYTHON_TAG), partial)
        if call is not None:
            parsed.calls.append(call)
        return parsed

    def _tagged(self, text: str, start: int, partial: bool) -> Call | None:
        """The call after ``<|python_tag|>`` at ``text[start]``, as far as it is written."""
        body = text[start:]
        if body.endswith(END_OF_MESSAGE):
            body = body[: -len(END_OF_MESSAGE)]
        elif partial:
            body = body[: len(body) - held_back(body, [END_OF_MESSAGE])]
        stripped = body.lstrip()
        if stripped.startswith("{"):
            call, _, _ = json_call(stripped, 0)
            return call
        builtin = _BUILTIN.match(body)
        if builtin is not None:
            close = closing_paren(body, builtin.end())
            if close is None:  # still being written (or cut off)
                return Call(builtin.group(1))
            arguments = python_arguments(body[builtin.end() : close])
            return Call(builtin.group(1), arguments or "{}")
        if partial or not stripped:
            return None  # code is read once whole (until then it may still turn out a builtin call)
        return Call("python", json.dumps({"code": body.strip()}, ensure_ascii=False))


__all__ = ["Llama3Format", "closing_paren", "is_llama3", "json_call", "python_arguments"]
