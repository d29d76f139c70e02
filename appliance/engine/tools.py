"""Tool calling for any model, in the "generic" style llama.cpp uses for templates without a native one.

The tools are described in the system prompt and the reply is constrained by a JSON schema (turned into
a grammar): ``{"tool_calls": [{"name": ..., "arguments": {...}}]}`` or, when the model may answer in
words (``tool_choice`` auto), ``{"response": "..."}``. Required and named choices allow only calls, so
even a tiny model returns a well-formed call.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

from appliance.errors import InvalidRequest


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI sends it


@dataclass(frozen=True)
class ToolReply:
    content: str | None
    tool_calls: tuple[ToolCall, ...]


def resolve_choice(tools: list[dict[str, Any]], tool_choice: Any) -> str | None:
    """Normalise ``tool_choice`` to "auto", "required", a tool name, or None (tools not offered)."""
    if not tools or tool_choice == "none":
        return None
    if tool_choice is None or tool_choice == "auto":
        return "auto"
    if tool_choice == "required":
        return "required"
    if isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name")
        if name not in {t["function"]["name"] for t in tools}:
            raise InvalidRequest(f"tool_choice names an unknown tool: {name!r}", param="tool_choice")
        return str(name)
    raise InvalidRequest(f"unsupported tool_choice: {tool_choice!r}", param="tool_choice")


def reply_schema(tools: list[dict[str, Any]], choice: str, *, parallel: bool = True) -> dict[str, Any]:
    """The JSON schema the model's reply must follow."""
    offered = (
        tools if choice in ("auto", "required") else [t for t in tools if t["function"]["name"] == choice]
    )
    calls = [
        {
            "type": "object",
            "properties": {
                "name": {"const": t["function"]["name"]},
                "arguments": t["function"].get("parameters") or {"type": "object"},
            },
            "required": ["name", "arguments"],
        }
        for t in offered
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


def system_instructions(tools: list[dict[str, Any]], choice: str) -> str:
    """Text appended to the system prompt that describes the tools and the reply format."""
    listing = json.dumps([t["function"] for t in tools], ensure_ascii=False, indent=2)
    if choice == "auto":
        how = (
            'Reply with JSON only: {"tool_calls": [{"name": <tool name>, "arguments": {...}}]} to call '
            'tools, or {"response": <text>} to answer the user directly.'
        )
    else:
        how = 'Reply with JSON only: {"tool_calls": [{"name": <tool name>, "arguments": {...}}]}.'
    return f"You can call these tools:\n{listing}\n{how}"


def history_content(tool_calls: list[dict[str, Any]], content: str | None) -> str:
    """An earlier assistant turn that called tools, written the way the model is asked to reply."""
    calls = []
    for call in tool_calls:
        fn = call.get("function") or {}
        try:
            arguments = json.loads(fn.get("arguments") or "{}")
        except json.JSONDecodeError:
            arguments = fn.get("arguments")
        calls.append({"name": fn.get("name"), "arguments": arguments})
    reply: dict[str, Any] = {"tool_calls": calls}
    if content:
        reply["response"] = content
    return json.dumps(reply, ensure_ascii=False)


def parse_reply(text: str) -> ToolReply:
    """Split the model's JSON reply into text content and tool calls (text as-is if it is not JSON)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return ToolReply(content=text, tool_calls=())
    if not isinstance(data, dict) or not ({"tool_calls", "response"} & data.keys()):
        return ToolReply(content=text, tool_calls=())
    calls = tuple(
        ToolCall(
            id=f"call_{secrets.token_hex(12)}",
            name=str(call.get("name")),
            arguments=json.dumps(call.get("arguments", {}), ensure_ascii=False),
        )
        for call in data.get("tool_calls") or []
        if isinstance(call, dict)
    )
    response = data.get("response")
    return ToolReply(content=response if isinstance(response, str) else None, tool_calls=calls)
