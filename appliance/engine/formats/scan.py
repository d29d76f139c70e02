"""Small scanners the families with special-token call sections share (DeepSeek, gpt-oss, Functionary,
Granite): white space, a JSON value read as far as it is written, the words before the first marker."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from appliance.engine.formats.base import Parsed, held_back, json_end, offered
from appliance.engine.formats.schema import GrammarBuilder, alternatives


def skip_space(text: str, i: int) -> int:
    """The index of the first character at or after ``i`` that is not white space."""
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def json_value(text: str, start: int) -> tuple[str, int | None]:
    """The raw JSON value at ``text[start]`` (white space before it skipped) as far as it is written,
    and the index past it (None while it is still open). The text only grows as the output does."""
    i = skip_space(text, start)
    end = json_end(text, i)
    if end is None:
        return text[i:], None
    return text[i:end], end


def first_marker(text: str, markers: Sequence[str]) -> tuple[int, str]:
    """Where the earliest of ``markers`` starts in ``text`` and which (-1 and "" when none does)."""
    best, which = -1, ""
    for marker in markers:
        at = text.find(marker)
        if at >= 0 and (best < 0 or at < best):
            best, which = at, marker
    return best, which


def words_before(text: str, markers: Sequence[str], *, partial: bool) -> str:
    """``text`` when none of ``markers`` is in it, less what could still turn into one (``partial``)."""
    keep = len(text) - (held_back(text, markers) if partial else 0)
    return text[:keep]


def expect(text: str, i: int, marker: str) -> int | None:
    """The index past ``marker`` when it is at ``text[i]`` (white space before it skipped), else None:
    absent, or not yet whole."""
    i = skip_space(text, i)
    return i + len(marker) if text.startswith(marker, i) else None


def each_call(
    builder: GrammarBuilder, tools: list[dict[str, Any]], choice: str, body: Callable[[str, str], str]
) -> str:
    """A rule for one call to any tool ``choice`` offers: ``body(name, arguments_rule)`` written for
    each (the family's text around the tool's name and its arguments)."""
    rules = []
    for tool in offered(tools, choice):
        name = tool["function"]["name"]
        rules.append(builder.rule(f"{name}-call", body(name, builder.arguments(tool))))
    return builder.rule("call", alternatives(rules))


def append_text(parsed: Parsed, field: str, text: str) -> None:
    """``text`` after what ``parsed``'s ``field`` holds, a blank line between two messages' texts (added
    only with the second text's first character, so the field still only grows)."""
    if not text:
        return
    before: str = getattr(parsed, field)
    setattr(parsed, field, before + "\n\n" + text if before else text)


def described(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``tools`` each with a description, for templates that write it unconditionally (OpenAI's API
    lets a client leave it out)."""
    return [
        {**tool, "function": {"description": "", **tool["function"]}} if "function" in tool else tool
        for tool in tools
    ]
