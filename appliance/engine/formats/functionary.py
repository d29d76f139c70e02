"""MeetKai's Functionary, two layouts.

v3.1 (Llama 3.1 based): calls after any words, each ``<function=NAME>{...}</function>``; code for the
python tool can also follow ``<|python_tag|>`` as it is, up to the end of the turn:

    Let me look.<function=get_weather>{"city": "Paris"}</function>

v3.2: every message names its recipient after ``>>>`` (the prompt ends with the first ``>>>``):
``all`` is the user, any other name a tool whose JSON arguments follow on the next line:

    all
    Let me look.>>>get_weather
    {"city": "Paris"}>>>get_time
    {"zone": "CET"}

Both templates list the tools themselves.
"""

from __future__ import annotations

import json
import re
from typing import Any

from appliance.engine.formats.base import Call, ChatFormat, Grammar, Parsed
from appliance.engine.formats.scan import (
    append_text,
    described,
    each_call,
    first_marker,
    json_value,
    words_before,
)
from appliance.engine.formats.schema import GrammarBuilder, literal, repeated

FUNCTION, FUNCTION_END, PYTHON_TAG = "<function=", "</function>", "<|python_tag|>"
RECIPIENT, TO_USER = ">>>", "all"
NAME = re.compile(r"[A-Za-z0-9_.\-]*")


def code_call(code: str, *, whole: bool) -> Call:
    """A call of the python tool with ``code`` as its one argument, as JSON that only grows while the
    code is written (the escaped text so far, then the closing quote and brace once ``whole``)."""
    quoted = json.dumps(code, ensure_ascii=False)
    return Call("python", '{"code": ' + (quoted + "}" if whole else quoted[:-1]))


def is_functionary_v32(source: str) -> bool:
    """The template asks for the recipient form (llama.cpp checks the same two strings)."""
    return ">>>all" in source and ">>>${recipient}" in source


def is_functionary_v31(source: str) -> bool:
    """The template writes ``<function=NAME>`` calls (Qwen3-Coder's have ``<parameter=`` inside a
    ``<tool_call>``)."""
    return "<function=" in source and FUNCTION_END in source and "<parameter=" not in source


class FunctionaryV31Format(ChatFormat):
    name = "functionary-v3.1"
    native_tools = True

    def markers(self) -> tuple[str, ...]:
        return (FUNCTION, FUNCTION_END, PYTHON_TAG)

    def template_tools(self, tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return described(tools)  # the template writes each tool's description unconditionally

    def grammar(self, tools: list[dict[str, Any]], choice: str, *, parallel: bool) -> Grammar | None:
        builder = GrammarBuilder()
        call = each_call(
            builder,
            tools,
            choice,
            lambda name, args: f"{literal(FUNCTION + name + '>')} {args} {literal(FUNCTION_END)}",
        )
        root = repeated(call, parallel=parallel)
        return Grammar(builder.build(root), (FUNCTION,) if choice == "auto" else ())

    def parse_calls(self, text: str, *, partial: bool) -> Parsed:
        first, _ = first_marker(text, (FUNCTION, PYTHON_TAG))
        if first < 0:
            return Parsed(words_before(text, (FUNCTION, PYTHON_TAG), partial=partial))
        parsed = Parsed(text[:first])
        i = first
        while i < len(text):
            if text.startswith(PYTHON_TAG, i):  # the code runs to the end of the turn
                parsed.calls.append(code_call(text[i + len(PYTHON_TAG) :], whole=not partial))
                return parsed
            if not text.startswith(FUNCTION, i):
                break
            name_end = text.find(">", i)
            if name_end < 0:
                return parsed  # the name is whole at its ">"
            arguments, end = json_value(text, name_end + 1)
            parsed.calls.append(Call(text[i + len(FUNCTION) : name_end].strip(), arguments))
            if end is None:
                return parsed
            close = text.find(FUNCTION_END, end)
            if close < 0:
                return parsed
            after = close + len(FUNCTION_END)
            at, _ = first_marker(text[after:], (FUNCTION, PYTHON_TAG))
            tail = text[after:] if at < 0 else text[after : after + at]
            if partial and at < 0:
                tail = words_before(tail, (FUNCTION, PYTHON_TAG), partial=True)
            if tail.strip():  # words after a call are content too
                parsed.content += tail
            if at < 0:
                return parsed
            i = after + at
        return parsed


class FunctionaryV32Format(ChatFormat):
    name = "functionary-v3.2"
    native_tools = True

    def markers(self) -> tuple[str, ...]:
        return (RECIPIENT,)

    def history_calls(self, message: dict[str, Any]) -> dict[str, Any]:
        """The template adds the arguments to its text: they stay a JSON string."""
        calls = []
        for call in message.get("tool_calls") or []:
            fn = dict(call.get("function") or {})
            if not isinstance(fn.get("arguments"), str):
                fn["arguments"] = json.dumps(fn.get("arguments") or {}, ensure_ascii=False)
            calls.append({**call, "function": fn})
        return {**message, "tool_calls": calls}

    def grammar(self, tools: list[dict[str, Any]], choice: str, *, parallel: bool) -> Grammar | None:
        """Lazily from ``>>>NAME`` with auto (the first message, right after the prompt's ``>>>``, is
        not constrained then); else from the first token, words to the user allowed first."""
        builder = GrammarBuilder()
        call = each_call(builder, tools, choice, lambda name, args: f'{literal(name)} "\\n" {args}')
        calls = repeated(call, parallel=parallel, separator=literal(RECIPIENT))
        if choice == "auto":
            names = [t["function"]["name"] for t in tools]
            return Grammar(builder.build(f"{literal(RECIPIENT)} {calls}"), tuple(f">>>{n}\n" for n in names))
        words = f"( {literal(TO_USER + chr(10))} [^>]* {literal(RECIPIENT)} )?"
        return Grammar(builder.build(f"{words} {calls}"))

    def parse(self, text: str, *, partial: bool, thinking: bool, tools: bool) -> Parsed:
        """Every reply names its recipient, tools or not (``all\n`` comes before plain words too)."""
        parsed = self.parse_calls(text, partial=partial)
        if not tools:
            parsed.calls = []  # a call of a tool nobody offered
        return parsed

    def parse_calls(self, text: str, *, partial: bool) -> Parsed:
        parsed = Parsed()
        i = len(RECIPIENT) if text.startswith(RECIPIENT) else 0  # the prompt's own >>> written again
        while i <= len(text):
            line_end = text.find("\n", i)
            recipient = text[i:] if line_end < 0 else text[i:line_end]
            if NAME.fullmatch(recipient) is None or (line_end >= 0 and not recipient):
                # not a recipient: words the model wrote as they are
                next_at = text.find(RECIPIENT, i)
                words = text[i:] if next_at < 0 else text[i:next_at]
                append_text(
                    parsed, "content", words_before(words, [RECIPIENT], partial=partial and next_at < 0)
                )
                if next_at < 0:
                    return parsed
                i = next_at + len(RECIPIENT)
                continue
            if line_end < 0:
                if not partial:
                    append_text(parsed, "content", recipient)
                return parsed  # the recipient is whole at its newline
            body_start = line_end + 1
            next_at = text.find(RECIPIENT, body_start)
            body = text[body_start:] if next_at < 0 else text[body_start:next_at]
            if partial and next_at < 0:
                body = words_before(body, [RECIPIENT], partial=True)
            open_ = partial and next_at < 0
            if recipient == TO_USER:
                append_text(parsed, "content", body)
            elif body.lstrip().startswith("{"):
                parsed.calls.append(Call(recipient, json_value(body, 0)[0]))
            elif not body.strip():
                if not open_:  # a call without arguments (else they may still come)
                    parsed.calls.append(Call(recipient, "{}"))
            elif recipient == "python":  # the python tool's code, written as it is
                parsed.calls.append(code_call(body, whole=not open_))
            else:  # a name, a line, then words: not a call after all
                append_text(parsed, "content", f"{recipient}\n{body}")
            if next_at < 0:
                return parsed
            i = next_at + len(RECIPIENT)
        return parsed
