"""Reading a model's output through its family's format, whole and as a stream split at every
boundary: the streamed pieces must add up to the whole parse (tests of appliance.engine.formats)."""

from __future__ import annotations

from dataclasses import dataclass

from appliance.backend import TextDelta, ToolCall, ToolCallDelta
from appliance.engine.formats.base import ChatFormat, Parsed
from appliance.engine.formats.reader import ReplyReader


@dataclass
class Streamed:
    content: str
    reasoning: str
    calls: list[tuple[str, str]]  # (name, arguments) joined from the deltas
    finished: tuple[ToolCall, ...]


def stream(
    fmt: ChatFormat,
    output: str,
    pieces: list[str],
    *,
    thinking: bool = False,
    tools: bool = True,
    cut: bool = False,
) -> Streamed:
    """``output`` fed to a ReplyReader in ``pieces`` (which must join to it)."""
    assert "".join(pieces) == output
    reader = ReplyReader(fmt, thinking=thinking, tools=tools)
    events: list[TextDelta | ToolCallDelta] = []
    for piece in pieces:
        events += reader.feed(piece)
    last, finished = reader.finish(cut=cut)
    events += last
    content = "".join(e.text for e in events if isinstance(e, TextDelta))
    reasoning = "".join(e.reasoning for e in events if isinstance(e, TextDelta))
    calls: dict[int, list[str]] = {}
    for e in events:
        if isinstance(e, ToolCallDelta):
            if e.name:
                assert e.index not in calls, "a call's name came twice"
                calls[e.index] = [e.name, ""]
            calls[e.index][1] += e.arguments
    return Streamed(content, reasoning, [tuple(calls[i]) for i in sorted(calls)], finished)  # type: ignore[misc]


def splits(output: str) -> list[list[str]]:
    """``output`` whole, one character at a time, and cut in two at every boundary."""
    ways = [[output], list(output)]
    ways += [[output[:i], output[i:]] for i in range(1, len(output))]
    return ways


def check_every_split(fmt: ChatFormat, output: str, *, thinking: bool = False, tools: bool = True) -> Parsed:
    """The whole parse of ``output``, after checking every way of streaming it gives the same reply."""
    whole = fmt.parse(output, partial=False, thinking=thinking, tools=tools)
    expected = [(c.name, c.arguments or "{}") for c in whole.calls]
    for pieces in splits(output):
        got = stream(fmt, output, pieces, thinking=thinking, tools=tools)
        where = f"split {[len(p) for p in pieces][:3]}"
        assert got.content == whole.content, where
        assert got.reasoning == whole.reasoning, where
        assert [(n, a or "{}") for n, a in got.calls] == expected, where
        assert [(c.name, c.arguments) for c in got.finished] == expected, where
    return whole
