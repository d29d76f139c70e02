"""A tool call on the seam, and a request's ``tool_choice`` made plain. How each model family writes
its calls is in appliance.engine.formats."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from appliance.errors import InvalidRequest


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI sends it


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
