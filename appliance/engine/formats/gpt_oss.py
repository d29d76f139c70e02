"""gpt-oss's harmony format: the reply is a run of messages, each a header naming its channel (and its
recipient, for a call) and a body. The template's prompt ends with ``<|start|>assistant``, so the
first header follows at once:

    <|channel|>analysis<|message|>The user wants the weather.<|end|>
    <|start|>assistant<|channel|>final<|message|>It is sunny.
    <|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>
    {"city": "Paris"}<|call|>                             (the call, on one line)

The analysis channel is the thoughts, final and commentary without a recipient (a preamble) are the
words, and a message to ``functions.NAME`` is a call whose body is its JSON arguments; the recipient
can also come in the role header (``<|start|>assistant to=functions.NAME<|channel|>commentary json``).
Messages to built-in tools (python, browser) are dropped. ``<|call|>`` ends the turn, so a reply
holds one call at most, and the template renders one call per earlier turn.
"""

from __future__ import annotations

from typing import Any

from appliance.engine.formats.base import Call, ChatFormat, Grammar, Parsed, Thinking, held_back
from appliance.engine.formats.scan import append_text, described, each_call, first_marker, json_value
from appliance.engine.formats.schema import GrammarBuilder, literal

START, CHANNEL, MESSAGE, CONSTRAIN = "<|start|>", "<|channel|>", "<|message|>", "<|constrain|>"
END, CALL, RETURN = "<|end|>", "<|call|>", "<|return|>"
ENDS = (END, CALL, RETURN, START)
RECIPIENT = " to=functions."
STRUCTURE = (START, CHANNEL, MESSAGE, CONSTRAIN, END, CALL, RETURN)


def _word_after(header: str, key: str) -> str | None:
    """The word following ``key`` in a message header (up to white space or a special token)."""
    at = header.find(key)
    if at < 0:
        return None
    word = header[at + len(key) :]
    for stop in (" ", "\n", "<|"):
        cut = word.find(stop)
        if cut >= 0:
            word = word[:cut]
    return word


class GptOssFormat(ChatFormat):
    name = "gpt-oss"
    native_tools = True

    def __init__(self) -> None:
        # As llama.cpp names them: the analysis channel's opening and its end (the parse is our own).
        self.thinking = Thinking(CHANNEL + "analysis" + MESSAGE, END)

    def template_variables(self, *, thinking: bool | None, effort: str | None) -> dict[str, Any]:
        """Harmony's "Reasoning: low|medium|high" line: the request's effort ("minimal" is low), low
        when it asks not to think (gpt-oss always thinks), else the template's medium."""
        if effort in ("low", "medium", "high"):
            return {"reasoning_effort": effort}
        if effort == "minimal" or thinking is False:
            return {"reasoning_effort": "low"}
        return {}

    def markers(self) -> tuple[str, ...]:
        return STRUCTURE

    def template_tools(self, tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return described(tools)  # the template writes tool.description unconditionally

    def history_calls(self, message: dict[str, Any]) -> dict[str, Any]:
        """The template reads the thoughts of a turn with calls from ``thinking`` (and refuses both
        thoughts and words there): the reasoning the client sent back goes there; content is never
        None (the template tests for text in it)."""
        ready = super().history_calls(message)
        thoughts = message.get("thinking") or message.get("reasoning_content") or message.get("reasoning")
        ready = {k: v for k, v in ready.items() if k not in ("reasoning_content", "reasoning")}
        if thoughts:
            ready["thinking"] = thoughts
            ready["content"] = ""
        else:
            ready["content"] = ready.get("content") or ""
        return ready

    def grammar(self, tools: list[dict[str, Any]], choice: str, *, parallel: bool) -> Grammar | None:
        """One call (harmony ends the turn at ``<|call|>``): the recipient, in the channel's header or
        the role's, then the arguments. Constrained from the first token, the model may think first."""
        builder = GrammarBuilder()
        channel = builder.rule("channel", f'{literal(CHANNEL)} ( "commentary" | "analysis" )')
        constraint = builder.rule("constraint", f'( " " {literal(CONSTRAIN)}? "json" )?')
        call = builder.rule(
            "recipient",
            f"{literal(RECIPIENT)} "
            + each_call(
                builder,
                tools,
                choice,
                lambda name, args: f"{literal(name)} {channel}? {constraint} {literal(MESSAGE)} {args}",
            ),
        )
        if choice == "auto":
            return Grammar(builder.build(call), (RECIPIENT,))
        thought = builder.rule("thought", '( [^<] | "<" [^|] )*')
        analysis = f"{literal(CHANNEL + 'analysis' + MESSAGE)} {thought} {literal(END + START + 'assistant')}"
        root = f"( {analysis} )? {channel}? {call}"
        return Grammar(builder.build(root))

    def parse(self, text: str, *, partial: bool, thinking: bool, tools: bool) -> Parsed:
        parsed = Parsed()
        i = 0
        while i < len(text):
            while i < len(text) and text[i] in " \t\r\n":
                i += 1
            header_end = text.find(MESSAGE, i)
            opens = text.startswith((START, CHANNEL, " to=", "to="), i)
            if header_end < 0 or not opens:
                rest = text[i:]
                if partial and header_end < 0 and (opens or _may_open(rest)):
                    return parsed  # a header still being written
                if not opens:  # words outside any message (a model that does not write harmony)
                    at, _ = first_marker(rest, (START, CHANNEL))
                    words = rest if at < 0 else rest[:at]
                    if partial and at < 0:
                        words = words[: len(words) - held_back(words, STRUCTURE)]
                    append_text(parsed, "content", words)
                    if at < 0:
                        return parsed
                    i += at
                    continue
                return parsed
            header = text[i:header_end]
            body_start = header_end + len(MESSAGE)
            at, which = first_marker(text[body_start:], ENDS)
            body = text[body_start:] if at < 0 else text[body_start : body_start + at]
            if at < 0 and partial:
                body = body[: len(body) - held_back(body, ENDS)]
            self._message(parsed, header, body, tools=tools)
            if at < 0:
                return parsed
            i = body_start + at + (0 if which == START else len(which))
        return parsed

    @staticmethod
    def _message(parsed: Parsed, header: str, body: str, *, tools: bool) -> None:
        """One message's body added where its header says it goes."""
        recipient = _word_after(header, "to=")
        channel = _word_after(header, CHANNEL) or ""
        if recipient is not None:
            if tools and recipient.startswith("functions."):
                parsed.calls.append(Call(recipient[len("functions.") :], json_value(body, 0)[0]))
            return  # a built-in tool's message (or a call nobody offered tools for): not for the user
        append_text(parsed, "reasoning" if channel == "analysis" else "content", body)


def _may_open(text: str) -> bool:
    """``text`` is the first characters of a message header."""
    return any(opener.startswith(text) for opener in (START, CHANNEL, "to="))
