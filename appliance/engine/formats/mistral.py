"""Mistral's ``[TOOL_CALLS]``, after any words. Mistral Nemo writes a JSON list of calls, each with a
9-character alphanumeric id; Mistral Small 3.2 writes each call as its name, ``[CALL_ID]`` and its id,
``[ARGS]`` and its JSON arguments; Devstral and Ministral 3 the same without the id (Ministral 3
Reasoning thinks first, between ``[THINK]`` and ``[/THINK]``):

    [TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "a1b2c3d4e"}]
    [TOOL_CALLS]get_weather[CALL_ID]a1b2c3d4e[ARGS]{"city": "Paris"}
    [TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}

The model's ids are kept. Its templates refuse any other id than 9 letters and digits, so an earlier
call's id (and its result's ``tool_call_id``) is given to them in that form.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from appliance.engine.formats.base import (
    Call,
    ChatFormat,
    Grammar,
    Parsed,
    Thinking,
    call_from_object,
    held_back,
    json_end,
    listed_calls,
    offered,
    tagged_calls,
)
from appliance.engine.formats.schema import GrammarBuilder, alternatives, json_object, literal, repeated

TOOL_CALLS, CALL_ID, ARGS = "[TOOL_CALLS]", "[CALL_ID]", "[ARGS]"
_ID = re.compile(r"[A-Za-z0-9]{9}")
ID_RULE = "[A-Za-z0-9]{9}"


def mistral_id(call_id: str) -> str:
    """``call_id`` as the 9 letters and digits Mistral's templates take: the same id when it is one,
    else one made from it (the same for the call and its result)."""
    if _ID.fullmatch(call_id):
        return call_id
    return hashlib.sha256(call_id.encode()).hexdigest()[:9]


class MistralFormat(ChatFormat):
    """``args``: calls as ``name[ARGS]{...}`` (Small 3.2, Devstral), with ``call_ids`` a ``[CALL_ID]``
    before the arguments (Small 3.2); else Nemo's JSON list."""

    name = "mistral"
    native_tools = True

    def __init__(self, *, args: bool = False, call_ids: bool = True, thinks: bool = False) -> None:
        self.args = args
        self.call_ids = call_ids
        self.thinking = Thinking("[THINK]", "[/THINK]") if thinks else None

    def markers(self) -> tuple[str, ...]:
        return (*super().markers(), TOOL_CALLS, *((CALL_ID, ARGS) if self.args else ()))

    def history_calls(self, message: dict[str, Any]) -> dict[str, Any]:
        ready = super().history_calls(message)
        for call in ready["tool_calls"]:
            call["id"] = mistral_id(str(call.get("id") or ""))
        return ready

    def history_result(self, message: dict[str, Any]) -> dict[str, Any]:
        return {**message, "tool_call_id": mistral_id(str(message.get("tool_call_id") or ""))}

    def grammar(self, tools: list[dict[str, Any]], choice: str, *, parallel: bool) -> Grammar | None:
        builder = GrammarBuilder({"name": 0, "arguments": 1, "id": 2})
        calls = []
        for tool in offered(tools, choice):
            name = tool["function"]["name"]
            args = builder.arguments(tool)
            if self.args:
                call_id = f"{literal(CALL_ID)} {ID_RULE} " if self.call_ids else ""
                body = f"{literal(TOOL_CALLS + name)} {call_id}{literal(ARGS)} {args}"
            else:
                call_id = '"\\"" ' + ID_RULE + ' "\\"" space'
                body = json_object(
                    [("name", f"{literal(literal(name))} space"), ("arguments", args), ("id", call_id)]
                )
            calls.append(builder.rule(f"{name}-call", body))
        if self.args:
            root = repeated(alternatives(calls), parallel=parallel)
        else:
            listed = repeated(alternatives(calls), parallel=parallel, separator='"," space')
            root = f'{literal(TOOL_CALLS)} "[" space {listed} "]"'
        return Grammar(builder.build(root), (TOOL_CALLS,) if choice == "auto" else ())

    def parse_calls(self, text: str, *, partial: bool) -> Parsed:
        if self.args:
            return tagged_calls(text, partial=partial, tags=(TOOL_CALLS, ""), read=self._named_call)
        first = text.find(TOOL_CALLS)
        if first < 0:
            keep = len(text) - (held_back(text, [TOOL_CALLS]) if partial else 0)
            return Parsed(text[:keep])
        return Parsed(text[:first], calls=self._listed_calls(text, first + len(TOOL_CALLS), partial))

    @staticmethod
    def _named_call(text: str, start: int) -> tuple[Call | None, int | None]:
        """``name[CALL_ID]id[ARGS]{...}`` at ``text[start]``: the call once its arguments begin (its
        name and id whole), and the index past them (None while they are written)."""
        args_at = text.find(ARGS, start)
        if args_at < 0:
            return None, None
        name, _, call_id = text[start:args_at].partition(CALL_ID)
        value_start = args_at + len(ARGS)
        end = json_end(text, value_start)
        arguments = text[value_start:end] if end is not None else text[value_start:]
        return Call(name.strip(), arguments.lstrip(), call_id.strip() or None), end

    @staticmethod
    def _listed_calls(text: str, start: int, partial: bool) -> list[Call]:
        """Nemo's JSON list of calls at ``text[start]``, as far as it is written. A call is reported
        once its id is whole (or its object closed): the id comes after the arguments, and the
        reader takes a call's id when it first sees the call."""
        calls, _ = listed_calls(text, start, call_from_object)
        return [c for c, end in calls if c.id is not None or end is not None or not partial]


def mistral_style(template: str) -> MistralFormat | None:
    """The Mistral format of ``template``, or None when it is not Mistral's."""
    if TOOL_CALLS not in template:
        return None
    if ARGS in template:
        return MistralFormat(args=True, call_ids=CALL_ID in template, thinks="[THINK]" in template)
    return MistralFormat()


__all__ = ["MistralFormat", "mistral_id", "mistral_style"]
