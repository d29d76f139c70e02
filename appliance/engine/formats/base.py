"""What every model family's chat format has in common: the parsed reply, the grammar that forces a
call, the thinking block, and the small scanners the family parsers are built from.

A family's ``parse`` reads the model's whole output so far. With ``partial`` it is called again after
every token, and what it returns must only grow: the content, the reasoning and each call's arguments of
a later parse start with those of an earlier one (appliance.engine.formats.reader streams the
differences). So a partial parse holds back any text that could still turn out to be the start of a
marker, and reports a call only once its name is whole.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Call:
    """A tool call as parsed so far: ``arguments`` is JSON text, whole once the call has closed."""

    name: str
    arguments: str = ""
    id: str | None = None  # the id the model wrote (Mistral's [CALL_ID]), else the reader makes one


@dataclass
class Parsed:
    content: str = ""
    reasoning: str = ""
    calls: list[Call] = field(default_factory=list)
    thinking: bool = False  # the thoughts are still being written (a partial parse)


@dataclass(frozen=True)
class Grammar:
    """A GBNF grammar (root rule ``root``) the reply must follow: from the first token when
    ``triggers`` is empty, else from where one of them first appears in the output (the grammar then
    matches from the trigger's first character: it starts with the trigger text)."""

    gbnf: str
    triggers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Thinking:
    """The tags around a model's thoughts (``<think>`` and ``</think>`` for most families)."""

    open: str
    close: str


def held_back(text: str, markers: Sequence[str]) -> int:
    """How many characters at the end of ``text`` could be the start of one of ``markers``: a partial
    parse keeps them out of what it reports until the next token says."""
    longest = 0
    for marker in markers:
        for n in range(min(len(marker) - 1, len(text)), longest, -1):
            if text.endswith(marker[:n]):
                longest = n
                break
    return longest


def split_thinking(
    text: str, thinking: Thinking | None, *, inside: bool, partial: bool
) -> tuple[str, str, bool]:
    """``text`` as (reasoning, the rest, whether the thinking is over). ``inside``: the prompt opened
    the thinking block, so the output starts in it; else a thinking block counts only at the very
    start (after white space). Thoughts cut off by the end of the output stay thoughts."""
    if thinking is None:
        return "", text, True
    body = text
    if not inside:
        stripped = text.lstrip()
        if stripped.startswith(thinking.open):
            body = stripped[len(thinking.open) :]
        elif partial and thinking.open.startswith(stripped):
            return "", "", False  # nothing yet, or the first characters of the open tag
        else:
            return "", text, True
    end = body.find(thinking.close)
    if end < 0:
        keep = len(body) - (held_back(body, [thinking.close]) if partial else 0)
        return body[:keep].strip(), "", False  # white space at the end waits: it may end the thoughts
    return body[:end].strip(), body[end + len(thinking.close) :].lstrip(), True


def json_end(text: str, start: int) -> int | None:
    """The index just past the JSON value starting at ``text[start]`` (white space before it skipped),
    or None while it is incomplete. Only the brackets and strings are followed: what is between is
    taken on trust (a grammar made it, or json.loads checks it after)."""
    i = start
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    if i >= len(text):
        return None
    depth = 0
    in_string = False
    escaped = False
    first = text[i]
    if first not in '{["':
        # A number, true, false or null: it ends at the first character that cannot continue it.
        j = i
        while j < len(text) and (text[j].isalnum() or text[j] in "+-."):
            j += 1
        return j if j < len(text) else None
    for j in range(i, len(text)):
        char = text[j]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
                if depth == 0:
                    return j + 1
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return j + 1
    return None


def object_fields(text: str, start: int) -> tuple[dict[str, tuple[int, int | None]], int | None]:
    """The fields of the JSON object starting at ``text[start]``, read as far as the text goes: for
    each key, the span of its raw value (end None: the value is still being written), and the index
    just past the object (None while it is open). A key is listed only once it is whole."""
    fields: dict[str, tuple[int, int | None]] = {}
    i = start
    n = len(text)

    def skip(k: int) -> int:
        while k < n and text[k] in " \t\r\n":
            k += 1
        return k

    i = skip(i)
    if i >= n or text[i] != "{":
        return fields, None
    i += 1
    while True:
        i = skip(i)
        if i >= n:
            return fields, None
        if text[i] == "}":
            return fields, i + 1
        if text[i] == ",":
            i += 1
            continue
        key_end = json_end(text, i)
        if key_end is None or text[i] != '"':
            return fields, None
        try:
            key = json.loads(text[i:key_end])
        except ValueError:
            return fields, None
        i = skip(key_end)
        if i >= n or text[i] != ":":
            return fields, None
        value_start = skip(i + 1)
        if value_start >= n:
            return fields, None
        value_end = json_end(text, value_start)
        fields[str(key)] = (value_start, value_end)
        if value_end is None:
            return fields, None
        i = value_end


def call_from_object(
    text: str, start: int, *, name_key: str = "name", args_key: str = "arguments"
) -> tuple[Call | None, int | None]:
    """The call written as a JSON object ``{"name": ..., "arguments": {...}}`` at ``text[start]``
    (keys named by the family), as far as it is written, and the index past the object (None while
    open). The arguments are the raw text of their value (a string value is decoded once whole)."""
    fields, end = object_fields(text, start)
    name_span = fields.get(name_key)
    if name_span is None or name_span[1] is None:
        return None, end
    try:
        name = json.loads(text[name_span[0] : name_span[1]])
    except ValueError:
        return None, end
    call = Call(str(name))
    args_span = fields.get(args_key)
    if args_span is not None:
        raw = text[args_span[0] : args_span[1]] if args_span[1] is not None else text[args_span[0] :]
        if raw.startswith('"'):  # arguments given as a JSON string: only whole
            if args_span[1] is not None:
                try:
                    call.arguments = str(json.loads(raw))
                except ValueError:
                    call.arguments = raw
        else:
            call.arguments = raw
    elif end is not None:
        call.arguments = "{}"
    id_span = fields.get("id")
    if id_span is not None and id_span[1] is not None:
        with contextlib.suppress(ValueError):
            call.id = str(json.loads(text[id_span[0] : id_span[1]]))
    return call, end


def listed_calls(
    text: str, start: int, read: Callable[[str, int], tuple[Call | None, int | None]]
) -> tuple[list[tuple[Call, int | None]], int | None]:
    """The calls in the JSON list starting at ``text[start]`` (white space before it skipped), each
    read by ``read(text, object_start)`` as far as it is written, with the index past its object (None
    while open); and the index past the list (None while open, or when no list starts there)."""
    calls: list[tuple[Call, int | None]] = []
    i = start
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    if not text.startswith("[", i):
        return calls, None
    i += 1
    while i < len(text):
        if text[i] in " \t\r\n,":
            i += 1
            continue
        if text[i] == "]":
            return calls, i + 1
        if text[i] != "{":
            break
        call, end = read(text, i)
        if call is not None:
            calls.append((call, end))
        if end is None:
            break
        i = end
    return calls, None


def tagged_calls(
    text: str,
    *,
    partial: bool,
    tags: tuple[str, str],
    read: Callable[[str, int], tuple[Call | None, int | None]],
) -> Parsed:
    """The content and calls of ``text`` where each call sits between the ``tags`` (open, close),
    after any words: ``read(text, start)`` reads one call's body from ``start`` (the call as far as it
    is written, and the index past its body, None while it is open). Words between and after calls are
    content too."""
    opening, closing = tags
    first = text.find(opening)
    if first < 0:
        keep = len(text) - (held_back(text, [opening]) if partial else 0)
        return Parsed(text[:keep])
    parsed = Parsed(text[:first])
    i = first
    while i >= 0:
        call, end = read(text, i + len(opening))
        if call is not None:
            parsed.calls.append(call)
        if end is None:
            return parsed
        close = text.find(closing, end)
        if close < 0:
            return parsed  # the closing tag is still to come (or never comes: the call stands)
        after = close + len(closing)
        i = text.find(opening, after)
        tail = text[after:] if i < 0 else text[after:i]
        if partial and i < 0:
            tail = tail[: len(tail) - held_back(tail, [opening])]
        if tail.strip():  # words after a call are content too
            parsed.content += tail
    return parsed


def tool_names(tools: Sequence[dict[str, Any]]) -> list[str]:
    return [str(t["function"]["name"]) for t in tools]


def offered(tools: Sequence[dict[str, Any]], choice: str) -> list[dict[str, Any]]:
    """The tools a call may name under ``choice`` ("auto", "required" or one tool's name)."""
    if choice in ("auto", "required"):
        return list(tools)
    return [t for t in tools if t["function"]["name"] == choice]


class ChatFormat:
    """A model family's way of writing tool calls and thoughts. This base is the plain one: no
    thinking, no calls; families override what they have."""

    name = "content"
    thinking: Thinking | None = None
    native_tools = False
    wrapped_answer = False
    """The answer comes inside markers of its own (Command R7B's <|START_RESPONSE|>, Granite's <response>):
    the reply is read by ``parse_calls`` with or without tools."""
    """The model's template renders the ``tools`` list itself (else the instructions are added to the
    system message, see ``tool_instructions``)."""

    def markers(self) -> tuple[str, ...]:
        """Texts the model writes as structure (tags and special tokens); single tokens among them are
        rendered in the output even when they are control tokens."""
        extra = (self.thinking.open, self.thinking.close) if self.thinking else ()
        return extra

    def tool_instructions(self, tools: list[dict[str, Any]], choice: str) -> str | None:
        """Text for the system message describing the tools, when the template does not render them."""
        return None

    def template_variables(self, *, thinking: bool | None, effort: str | None) -> dict[str, Any]:
        """What this family's template reads of a request's wish to think (None: the model's default)
        and its reasoning effort (OpenAI's "minimal" to "high"); by default nothing."""
        return {}

    def template_tools(self, tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The ``tools`` list as this family's template reads it (by default as the client sent it)."""
        return tools

    def history_calls(self, message: dict[str, Any]) -> dict[str, Any]:
        """An earlier assistant turn with ``tool_calls``, made ready for the template: by default the
        calls stay (OpenAI shape, with arguments also given as an object as most templates want)."""
        calls = []
        for call in message.get("tool_calls") or []:
            fn = dict(call.get("function") or {})
            arguments = fn.get("arguments")
            if isinstance(arguments, str):
                with contextlib.suppress(ValueError):
                    fn["arguments"] = json.loads(arguments or "{}")
            calls.append({**call, "function": fn})
        return {**message, "tool_calls": calls}

    def for_tools(self, tools: list[dict[str, Any]]) -> ChatFormat:
        """This format for a request offering ``tools``. A family whose calls are not written as JSON
        reads each argument's type from its tool's schema (Qwen3-Coder's XML parameters); the others
        are the same for every request."""
        return self

    def history_result(self, message: dict[str, Any]) -> dict[str, Any]:
        """A tool result (role ``tool``) made ready for the template: by default as it is (Mistral's
        templates want the call's id in the form its ``history_calls`` gave it)."""
        return message

    def grammar(self, tools: list[dict[str, Any]], choice: str, *, parallel: bool) -> Grammar | None:
        """The grammar of a reply with calls; None when the family has none (calls are parsed only)."""
        return None

    def parse(self, text: str, *, partial: bool, thinking: bool, tools: bool) -> Parsed:
        """The reply in ``text``: thoughts (``thinking``: the output starts inside the thinking block),
        content, and calls when ``tools`` were offered."""
        reasoning, rest, done = split_thinking(text, self.thinking, inside=thinking, partial=partial)
        if not done:
            return Parsed(reasoning=reasoning, thinking=True)
        if not tools and not self.wrapped_answer:
            return Parsed(rest, reasoning)
        parsed = self.parse_calls(rest, partial=partial)
        parsed.reasoning = reasoning
        if not tools:
            parsed.calls = []  # none were offered: the answer's text only
        return parsed

    def parse_calls(self, text: str, *, partial: bool) -> Parsed:
        """The content and calls of ``text`` (after any thinking)."""
        return Parsed(text)


def literal(text: str) -> str:
    """``text`` as a GBNF string literal."""
    return json.dumps(text, ensure_ascii=False)
