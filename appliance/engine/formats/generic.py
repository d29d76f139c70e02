"""Tool calls for a template that has no format of its own, in the "generic" style llama.cpp uses.

The tools are described in the system message and the reply is a JSON document:
``{"tool_calls": [{"name": ..., "arguments": {...}}]}`` or, when the model may answer in words
(``tool_choice`` auto), ``{"response": "..."}``. The grammar holds from the first token, so even a tiny
model returns a well-formed call; the reader streams the ``response`` text and the calls as they are
written.
"""

from __future__ import annotations

import json
from typing import Any

from appliance.engine.formats.base import (
    Call,
    ChatFormat,
    Grammar,
    Parsed,
    call_from_object,
    json_end,
    object_fields,
    offered,
)
from appliance.engine.formats.schema import GrammarBuilder


def reply_schema(tools: list[dict[str, Any]], choice: str, *, parallel: bool = True) -> dict[str, Any]:
    """The JSON schema the model's reply must follow."""
    calls = [
        {
            "type": "object",
            "properties": {
                "name": {"const": t["function"]["name"]},
                "arguments": t["function"].get("parameters") or {"type": "object"},
            },
            "required": ["name", "arguments"],
        }
        for t in offered(tools, choice)
    ]
    call_list: dict[str, Any] = {
        "type": "array",
        "items": calls[0] if len(calls) == 1 else {"anyOf": calls},
        "minItems": 1,
    }
    if not parallel:
        call_list["maxItems"] = 1
    with_calls = {"type": "object", "properties": {"tool_calls": call_list}, "required": ["tool_calls"]}
    if choice != "auto":
        return with_calls
    in_words = {"type": "object", "properties": {"response": {"type": "string"}}, "required": ["response"]}
    return {"anyOf": [with_calls, in_words]}


def partial_string(raw: str) -> str:
    """The text of a JSON string literal as far as it is written (``raw`` starts at its quote): escape
    sequences still being written are left for later."""
    body = raw[1:]
    end = len(body)
    i = 0
    while i < len(body):
        char = body[i]
        if char == "\\":
            width = 6 if body[i + 1 : i + 2] == "u" else 2
            if i + width > len(body):
                end = i
                break
            i += width
            continue
        if char == '"':
            end = i
            break
        i += 1
    try:
        return str(json.loads('"' + body[:end] + '"'))
    except ValueError:
        return ""


class GenericFormat(ChatFormat):
    name = "generic"

    def tool_instructions(self, tools: list[dict[str, Any]], choice: str) -> str | None:
        listing = json.dumps([t["function"] for t in tools], ensure_ascii=False, indent=2)
        if choice == "auto":
            how = (
                'Reply with JSON only: {"tool_calls": [{"name": <tool name>, "arguments": {...}}]} to call '
                'tools, or {"response": <text>} to answer the user directly.'
            )
        else:
            how = 'Reply with JSON only: {"tool_calls": [{"name": <tool name>, "arguments": {...}}]}.'
        return f"You can call these tools:\n{listing}\n{how}"

    def history_calls(self, message: dict[str, Any]) -> dict[str, Any]:
        """An earlier turn's calls written into its content, the way the model is asked to reply."""
        calls = []
        for call in message.get("tool_calls") or []:
            fn = call.get("function") or {}
            try:
                arguments = json.loads(fn.get("arguments") or "{}")
            except json.JSONDecodeError:
                arguments = fn.get("arguments")
            calls.append({"name": fn.get("name"), "arguments": arguments})
        reply: dict[str, Any] = {"tool_calls": calls}
        if message.get("content"):
            reply["response"] = message["content"]
        out = {k: v for k, v in message.items() if k != "tool_calls"}
        out["content"] = json.dumps(reply, ensure_ascii=False)
        return out

    def grammar(self, tools: list[dict[str, Any]], choice: str, *, parallel: bool) -> Grammar | None:
        builder = GrammarBuilder()
        builder.json(reply_schema(tools, choice, parallel=parallel), "")
        return Grammar(builder.build(None))

    def parse_calls(self, text: str, *, partial: bool) -> Parsed:
        start = len(text) - len(text.lstrip())
        if start == len(text):
            return Parsed("" if partial else text)
        if text[start] != "{":
            return Parsed(text)
        fields, end = object_fields(text, start)
        if not partial and (end is None or not self._is_json(text[start:end])):
            return Parsed(text)  # not the JSON it was asked for: the words as they are
        parsed = Parsed()
        response = fields.get("response")
        if response is not None and text[response[0]] == '"':
            parsed.content = partial_string(text[response[0] : response[1]])
        calls = fields.get("tool_calls")
        if calls is not None:
            parsed.calls = self._calls(text, calls[0])
        return parsed

    @staticmethod
    def _is_json(text: str) -> bool:
        try:
            json.loads(text)
        except ValueError:
            return False
        return True

    @staticmethod
    def _calls(text: str, start: int) -> list[Call]:
        """The calls of the JSON array at ``text[start]``, as far as it is written."""
        calls: list[Call] = []
        if text[start] != "[":
            return calls
        i = start + 1
        while i < len(text):
            char = text[i]
            if char in " \t\r\n,":
                i += 1
                continue
            if char != "{":
                break
            call, end = call_from_object(text, i)
            if call is not None:
                calls.append(call)
            if end is None:
                break
            i = end
        return calls


__all__ = ["GenericFormat", "json_end", "partial_string", "reply_schema"]
