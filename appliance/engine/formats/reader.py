"""A reply read as the model writes it: the output so far is parsed again after each token by its
family's format, and what grew since the last parse goes out as events (thoughts and text as
TextDelta, calls as ToolCallDelta). A family's partial parse only ever grows (formats.base), so the
streamed pieces add up to the whole reply."""

from __future__ import annotations

import logging
import secrets

from appliance.backend import TextDelta, ToolCall, ToolCallDelta
from appliance.engine.formats.base import ChatFormat, Parsed

log = logging.getLogger(__name__)

ReplyEvent = TextDelta | ToolCallDelta


class ReplyReader:
    """One reply's parse state. ``thinking``: the prompt opened the thinking block; ``tools``: tools
    were offered (else calls are not looked for)."""

    def __init__(self, fmt: ChatFormat, *, thinking: bool, tools: bool) -> None:
        self.format = fmt
        self._thinking = thinking
        self._tools = tools
        self._text = ""
        self._sent = Parsed()
        self._ids: list[str] = []
        self.thinking = thinking  # the model is writing its thoughts now (as of the last piece)

    def feed(self, text: str) -> list[ReplyEvent]:
        """Events for ``text``, the output's next piece."""
        if not text:
            return []
        self._text += text
        parsed = self._parse(partial=True)
        self.thinking = parsed.thinking
        return self._diff(parsed)

    def finish(self, *, cut: bool) -> tuple[list[ReplyEvent], tuple[ToolCall, ...]]:
        """The last events and every call whole. ``cut``: the output ended at max_tokens, so it is
        read as far as it goes (a half-written call keeps what it has) rather than as a whole."""
        events = self._diff(self._parse(partial=cut))
        calls = tuple(
            ToolCall(self._ids[i], call.name, call.arguments or "{}")
            for i, call in enumerate(self._sent.calls)
        )
        return events, calls

    def _parse(self, *, partial: bool) -> Parsed:
        return self.format.parse(self._text, partial=partial, thinking=self._thinking, tools=self._tools)

    def _diff(self, parsed: Parsed) -> list[ReplyEvent]:
        events: list[ReplyEvent] = []
        sent = self._sent
        reasoning = _grown(sent.reasoning, parsed.reasoning, "reasoning")
        content = _grown(sent.content, parsed.content, "content")
        if reasoning or content:
            events.append(TextDelta(content, reasoning=reasoning))
            sent.reasoning += reasoning
            sent.content += content
        for index, call in enumerate(parsed.calls):
            if index >= len(sent.calls):
                self._ids.append(call.id or f"call_{secrets.token_hex(12)}")
                sent.calls.append(type(call)(call.name, call.arguments, call.id))
                events.append(ToolCallDelta(index, self._ids[index], call.name, call.arguments))
                continue
            more = _grown(sent.calls[index].arguments, call.arguments, "arguments")
            if more:
                sent.calls[index].arguments += more
                events.append(ToolCallDelta(index, arguments=more))
        return events


def _grown(before: str, now: str, what: str) -> str:
    """What ``now`` adds to ``before``; nothing when it does not extend it (a format's parse that did
    not only grow: logged, and the streamed text stands)."""
    if now.startswith(before):
        return now[len(before) :]
    log.debug("the parsed %s changed instead of growing: %r -> %r", what, before[-40:], now[-40:])
    return ""
