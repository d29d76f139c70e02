"""The Responses API's stream: the backend's events (TextDelta, ToolCallDelta, Finished) written as
OpenAI's semantic events, each numbered by ``sequence_number``:

``response.created``, ``response.in_progress``; per output item ``response.output_item.added``, its
content (a reasoning item: ``response.content_part.added``, ``response.reasoning_text.delta``...,
``.done``, ``response.content_part.done``; a message: the same with ``output_text``; a function call:
``response.function_call_arguments.delta``..., ``.done``), ``response.output_item.done``; then
``response.completed`` (``response.incomplete`` when cut by max_output_tokens). A failure after the
start ends it with ``response.failed``, the response's ``error`` saying why."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

from appliance.backend import Event, Finished, TokenLogprob, ToolCall, ToolCallDelta
from appliance.errors import ApplianceError
from server.openai_payloads import chat_logprob
from server.responses_items import call_item, message_item, new_id, reasoning_item, text_part

log = logging.getLogger(__name__)

Finish = Callable[[str, list[dict[str, Any]], Finished | None, dict[str, Any] | None], dict[str, Any]]
"""(status, output items, the end, error) -> the response object."""


class _Writer:
    """The events of one response: the item being written, the items done, the numbering."""

    def __init__(self, logprobs: bool, namespaces: Mapping[str, str]) -> None:
        self.sequence = 0
        self.logprobs = logprobs
        self.namespaces = namespaces
        self.done: list[dict[str, Any]] = []
        self.kind = ""  # "", "reasoning", "message" or "function_call": the open item's
        self.item: dict[str, Any] = {}
        self.text: list[str] = []
        self.lps: list[TokenLogprob] = []
        self.calls: dict[int, int] = {}  # a streamed call's index -> its output index

    def event(self, kind: str, **fields: Any) -> dict[str, Any]:
        self.sequence += 1
        return {"type": kind, "sequence_number": self.sequence - 1, **fields}

    def _at(self) -> dict[str, Any]:
        return {"item_id": self.item["id"], "output_index": len(self.done)}

    def _part(self) -> dict[str, Any]:
        text = "".join(self.text)
        if self.kind == "reasoning":
            return {"type": "reasoning_text", "text": text}
        return text_part(text, self.lps if self.logprobs else None)

    def open(self, kind: str, item: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield from self.close("completed")
        self.kind, self.item, self.text, self.lps = kind, item, [], []
        yield self.event("response.output_item.added", output_index=len(self.done), item=item)
        if kind != "function_call":
            part = self._part()
            yield self.event("response.content_part.added", **self._at(), content_index=0, part=part)

    def delta(self, kind: str, text: str, lps: tuple[TokenLogprob, ...] = ()) -> Iterator[dict[str, Any]]:
        """A piece of thoughts or of the answer, in the item of its kind (opened when another is open)."""
        if self.kind != kind:
            empty = reasoning_item(new_id("rs"), "", "in_progress") if kind == "reasoning" else (
                message_item(new_id("msg"), [], "in_progress"))  # fmt: skip
            yield from self.open(kind, empty)
        self.text.append(text)
        self.lps.extend(lps)
        if kind == "reasoning":
            yield self.event("response.reasoning_text.delta", **self._at(), content_index=0, delta=text)
        else:
            pieces = [chat_logprob(lp) for lp in lps] if self.logprobs else []
            yield self.event("response.output_text.delta", **self._at(), content_index=0, delta=text,
                             logprobs=pieces)  # fmt: skip

    def call(self, delta: ToolCallDelta) -> Iterator[dict[str, Any]]:
        if delta.index not in self.calls:
            item = call_item(new_id("fc"), ToolCall(delta.id, delta.name, ""), "in_progress", self.namespaces)
            yield from self.open("function_call", item)
            self.calls[delta.index] = len(self.done)
        if delta.arguments:
            self.text.append(delta.arguments)
            yield self.event("response.function_call_arguments.delta", **self._at(), delta=delta.arguments)

    def close(self, status: str) -> Iterator[dict[str, Any]]:
        """The open item's done events; the item joins the done ones."""
        if not self.kind:
            return
        at, text = self._at(), "".join(self.text)
        if self.kind == "function_call":
            item = {**self.item, "arguments": text, "status": status}
            yield self.event("response.function_call_arguments.done", **at, arguments=text)
        else:
            part = self._part()
            if self.kind == "reasoning":
                item = {**self.item, "content": [part], "status": status}
                yield self.event("response.reasoning_text.done", **at, content_index=0, text=text)
            else:
                item = {**self.item, "content": [part], "status": status}
                yield self.event("response.output_text.done", **at, content_index=0, text=text,
                                 logprobs=part.get("logprobs", []))  # fmt: skip
            yield self.event("response.content_part.done", **at, content_index=0, part=part)
        yield self.event("response.output_item.done", output_index=at["output_index"], item=item)
        self.done.append(item)
        self.kind = ""


async def response_events(
    events: AsyncIterator[Event],
    started: dict[str, Any],
    finish: Finish,
    *,
    logprobs: bool,
    namespaces: Mapping[str, str],
) -> AsyncIterator[dict[str, Any]]:
    """The stream of one response: ``started`` (the in-progress response object) first, the backend's
    ``events`` as items, then ``finish(status, items, end, error)`` in the terminal event. ``namespaces``:
    a function's name -> the namespace tool it belongs to, named in its calls."""
    writer = _Writer(logprobs, namespaces)
    yield writer.event("response.created", response=started)
    yield writer.event("response.in_progress", response=started)
    finished: Finished | None = None
    try:
        async for event in events:
            if isinstance(event, Finished):
                finished = event
            elif isinstance(event, ToolCallDelta):
                for out in writer.call(event):
                    yield out
            else:
                for kind, text in (("reasoning", event.reasoning), ("message", event.text)):
                    if text or (kind == "message" and event.logprobs):
                        for out in writer.delta(kind, text, event.logprobs if kind == "message" else ()):
                            yield out
    except Exception as exc:  # after the 200: the failure goes in the response, as OpenAI sends it
        if not isinstance(exc, ApplianceError):
            log.exception("response stream failed")
        code = exc.code if isinstance(exc, ApplianceError) and exc.code else "server_error"
        error = {"code": code, "message": str(getattr(exc, "message", exc))}
        yield writer.event("response.failed", response=finish("failed", writer.done, None, error))
        return
    if finished is None:  # every backend's stream ends with it; a client must not wait for it forever
        error = {"code": "server_error", "message": "the generation ended without its end"}
        yield writer.event("response.failed", response=finish("failed", writer.done, None, error))
        return
    status = "incomplete" if finished.finish_reason == "length" else "completed"
    streamed = set(writer.calls)
    for out in writer.close(status):
        yield out
    # Calls a backend gives only whole, with the end: each goes out whole, once.
    for index, call in enumerate(finished.tool_calls):
        if index not in streamed:
            for out in writer.call(ToolCallDelta(index, call.id, call.name, call.arguments)):
                yield out
            for out in writer.close(status):
                yield out
    if not writer.done or all(item["type"] == "reasoning" for item in writer.done):
        # An empty answer is still a message, as unstreamed.
        for out in writer.open("message", message_item(new_id("msg"), [], "in_progress")):
            yield out
        for out in writer.close(status):
            yield out
    kind = "response.completed" if status == "completed" else "response.incomplete"
    yield writer.event(kind, response=finish(status, writer.done, finished, None))
