"""DeepSeek's tool calls: R1 (and its Llama and Qwen distills) and V3.1. Both think between ``<think>``
and ``</think>`` (their templates open the block at the end of the prompt, so the output starts in
it) and put their calls in one section of special tokens after any words:

    R1:   <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather
          ```json
          {"city": "Paris"}
          ```<｜tool▁call▁end｜><｜tool▁calls▁end｜>
    V3.1: <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{"city": "Paris"}
          <｜tool▁call▁end｜><｜tool▁calls▁end｜>      (on one line)

Several calls follow one another inside the section (R1 puts a newline between them). Neither
official template lists the tools, so the instructions go into the system message; llama.cpp's own R1
template (llama-cpp-deepseek-r1.jinja) lists them itself.
"""

from __future__ import annotations

import json
import re
from typing import Any

from appliance.engine.formats.base import Call, ChatFormat, Grammar, Parsed, Thinking, held_back
from appliance.engine.formats.scan import each_call, expect, json_value, skip_space, words_before
from appliance.engine.formats.schema import GrammarBuilder, literal, repeated

CALLS_BEGIN, CALLS_END = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
CALL_BEGIN, CALL_END, SEP = "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁sep｜>"
FENCE_OPEN, FENCE_CLOSE = "```json", "```"


def is_deepseek(source: str) -> bool:
    """The template writes DeepSeek's call section (R1 or V3.1; V3.2's DSML markup is another)."""
    return SEP in source and CALLS_BEGIN in source and "DSML" not in source


class DeepSeekFormat(ChatFormat):
    """R1 (``v31`` False) or V3.1, made for the template ``source`` (how it wants earlier calls)."""

    def __init__(self, source: str = "", *, v31: bool = False) -> None:
        self.v31 = v31
        self.name = "deepseek-v3.1" if v31 else "deepseek-r1"
        self.thinking = Thinking("<think>", "</think>")
        # Only llama.cpp's R1 template lists the tools; the official ones leave them to the system prompt.
        self.native_tools = re.search(r"\{%-?\s*if tools", source) is not None
        # The Llama-8B distill's template adds the arguments to text: it wants them as a string.
        self._string_arguments = re.search(r"\['arguments'\]\s*\+", source) is not None

    def template_variables(self, *, thinking: bool | None, effort: str | None) -> dict[str, Any]:
        """V3.1's ``thinking`` switch (off unless asked); R1 always thinks, and llama.cpp's copy of the
        Qwen distill's template closes the thoughts at once unless ``enable_thinking``."""
        if self.v31:
            return {} if thinking is None else {"thinking": thinking}
        return {"enable_thinking": True if thinking is None else thinking}

    def markers(self) -> tuple[str, ...]:
        return (*super().markers(), CALLS_BEGIN, CALLS_END, CALL_BEGIN, CALL_END, SEP)

    def tool_instructions(self, tools: list[dict[str, Any]], choice: str) -> str | None:
        listing = json.dumps([t["function"] for t in tools], ensure_ascii=False, indent=2)
        header = "example_function_name" + SEP if self.v31 else "function" + SEP + "example_function_name\n"
        body = '{"arg1": "some_value"}' if self.v31 else '```json\n{"arg1": "some_value"}\n```'
        must = "You must call one of these tools." if choice != "auto" else ""
        return (
            f"You can call any of the following function tools to satisfy the user's requests: {listing}\n\n"
            "Example function tool call syntax:\n\n"
            f"{CALLS_BEGIN}{CALL_BEGIN}{header}{body}{CALL_END}{CALLS_END}\n{must}"
        ).strip()

    def history_calls(self, message: dict[str, Any]) -> dict[str, Any]:
        """The calls with a ``type`` (R1's template writes it), arguments as the template wants them,
        and no empty content (the distills' templates would write an empty turn after the calls, or
        skip the calls, for "" where they test for None)."""
        ready = super().history_calls(message)
        if ready.get("content") and not self.v31:
            # R1's templates write either the words or the calls of a turn: the calls go after the
            # words, in the model's own layout.
            written = "\n".join(
                f"{CALL_BEGIN}function{SEP}{call['function'].get('name')}\n{FENCE_OPEN}\n"
                f"{json.dumps(call['function'].get('arguments'), ensure_ascii=False)}\n"
                f"{FENCE_CLOSE}{CALL_END}"
                for call in ready.pop("tool_calls")
            )
            return {**ready, "content": f"{ready['content']}{CALLS_BEGIN}{written}{CALLS_END}"}
        calls = []
        for call in ready["tool_calls"]:
            fn = dict(call["function"])
            if self._string_arguments and not isinstance(fn.get("arguments"), str):
                fn["arguments"] = json.dumps(fn.get("arguments") or {}, ensure_ascii=False)
            calls.append({"type": "function", **call, "function": fn})
        return {**ready, "tool_calls": calls, "content": ready.get("content") or None}

    def grammar(self, tools: list[dict[str, Any]], choice: str, *, parallel: bool) -> Grammar | None:
        builder = GrammarBuilder()
        call = each_call(builder, tools, choice, self._call_rule)
        calls = repeated(call, parallel=parallel, separator='"\\n"?')
        section = f"{literal(CALLS_BEGIN)} {calls} {literal(CALLS_END)}"
        if choice == "auto":
            return Grammar(builder.build(section), (CALLS_BEGIN,))
        # From the first token, and the prompt may have opened the thoughts: they may go on first
        # (without "</" in them), or end at once, or the calls may start inside them (parse sees to it).
        thought = builder.rule("thought", '( [^<] | "<" [^/] )*')
        return Grammar(builder.build(f'( {thought} "</think>" [ \\t\\n]* )? {section}'))

    def _call_rule(self, name: str, args: str) -> str:
        """The grammar of one call to ``name`` whose arguments follow rule ``args``."""
        if self.v31:
            return f"{literal(CALL_BEGIN + name + SEP)} {args} {literal(CALL_END)}"
        head = CALL_BEGIN + "function" + SEP + name + "\n" + FENCE_OPEN + "\n"
        return f'{literal(head)} {args} "\\n"? {literal(FENCE_CLOSE + CALL_END)}'

    def parse(self, text: str, *, partial: bool, thinking: bool, tools: bool) -> Parsed:
        """As the base reads it, but calls that begin inside thoughts the prompt opened end them (a
        grammar that forced the calls from the first token, or a model that skipped ``</think>``)."""
        if thinking and tools and self.thinking is not None and self.thinking.close not in text:
            begin = text.find(CALLS_BEGIN)
            if begin >= 0:
                text = text[:begin] + self.thinking.close + text[begin:]
            elif partial:  # the thoughts' last characters may still turn into the section's start
                text = text[: len(text) - held_back(text, [CALLS_BEGIN])]
        return super().parse(text, partial=partial, thinking=thinking, tools=tools)

    def parse_calls(self, text: str, *, partial: bool) -> Parsed:
        first = text.find(CALLS_BEGIN)
        if first < 0:
            return Parsed(words_before(text, [CALLS_BEGIN], partial=partial))
        parsed = Parsed(text[:first])
        i = first + len(CALLS_BEGIN)
        while True:
            j = skip_space(text, i)
            if text.startswith(CALL_BEGIN, j):
                call, end = self._call(text, j + len(CALL_BEGIN))
                if call is not None:
                    parsed.calls.append(call)
                if end is None:
                    return parsed
                i = end
                continue
            if text.startswith(CALLS_END, j):
                tail = text[j + len(CALLS_END) :]
                if tail.strip():  # words after the section are content too
                    parsed.content += tail
            return parsed

    def _call(self, text: str, start: int) -> tuple[Call | None, int | None]:
        """The call whose header starts at ``text[start]`` (past its begin token), as far as written,
        and the index past its end token (None while open)."""
        sep = text.find(SEP, start)
        if sep < 0:
            return None, None
        if self.v31:
            name = text[start:sep].strip()
            i = sep + len(SEP)
        else:
            name_end = text.find("\n", sep)
            if name_end < 0:
                return None, None  # the name is whole only at its newline
            name = text[sep + len(SEP) : name_end].strip()
            i = skip_space(text, name_end)
            if text.startswith(FENCE_OPEN, i):
                i += len(FENCE_OPEN)
            elif FENCE_OPEN.startswith(text[i:]):
                return Call(name), None
        arguments, end = json_value(text, i)
        call = Call(name, arguments)
        if end is None:
            return call, None
        if not self.v31:
            fence = expect(text, end, FENCE_CLOSE)
            end = fence if fence is not None else end
        after = expect(text, end, CALL_END)
        return call, after
