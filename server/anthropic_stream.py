"""A generation's events written as Anthropic's answer: a whole message, or its stream of SSE events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from appliance.backend import Event, Finished, ToolCallDelta
from appliance.errors import ApplianceError
from server.errors import dialect_error_body
from server.sse import frame

_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


@dataclass(frozen=True)
class Reply:
    """What every answer to one request says of itself."""

    message_id: str
    model: str
    omit_thinking: bool = False
    """``thinking.display: "omitted"``: thinking blocks come back without their text."""


def stop(finished: Finished | None) -> tuple[str, str | None]:
    """Anthropic's ``stop_reason`` and ``stop_sequence`` for the end of a generation."""
    if finished is None:
        return "end_turn", None
    if finished.finish_reason == "stop" and finished.stop_sequence is not None:
        return "stop_sequence", finished.stop_sequence
    return _STOP_REASONS.get(finished.finish_reason, "end_turn"), None


def _thinking_block(thinking: str) -> dict[str, Any]:
    # No signature: the thoughts are this machine's own, and nothing here checks one when they come back.
    return {"type": "thinking", "thinking": thinking, "signature": ""}


def _tool_uses(finished: Finished | None) -> list[dict[str, Any]]:
    blocks = []
    for call in finished.tool_calls if finished is not None else ():
        try:
            arguments = json.loads(call.arguments or "{}")
        except ValueError:
            arguments = {}
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": arguments})
    return blocks


def message(reply: Reply, text: str, thinking: str, finished: Finished | None) -> dict[str, Any]:
    """The whole message (``stream`` false)."""
    blocks: list[dict[str, Any]] = []
    if thinking:
        blocks.append(_thinking_block("" if reply.omit_thinking else thinking))
    if text:
        blocks.append({"type": "text", "text": text})
    reason, sequence = stop(finished)
    usage = finished.usage if finished is not None else None
    return {
        "id": reply.message_id, "type": "message", "role": "assistant", "model": reply.model,
        "content": blocks + _tool_uses(finished), "stop_reason": reason, "stop_sequence": sequence,
        "usage": {"input_tokens": usage.prompt_tokens if usage else 0,
                  "output_tokens": usage.completion_tokens if usage else 0},
    }  # fmt: skip


def _sse(kind: str, data: dict[str, Any]) -> bytes:
    return frame({"type": kind, **data}, event=kind)


async def events(
    reply: Reply, generated: AsyncIterator[Event], cancel: Callable[[], None], input_tokens: int | None
) -> AsyncIterator[bytes]:
    """Anthropic's stream: message_start (with the prompt's tokens when the backend knew them before it
    began: the local engine does; a remote says them only at the end, in message_delta), a thinking
    block and a text block (each start/deltas/stop, the thinking first), a tool_use block per call (its
    arguments as input_json_delta fragments, as the model writes them), then message_delta (stop reason,
    tokens) and message_stop."""
    start: dict[str, Any] = {
        "id": reply.message_id, "type": "message", "role": "assistant", "model": reply.model,
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": input_tokens or 0, "output_tokens": 0},
    }  # fmt: skip
    yield _sse("message_start", {"message": start})
    index, open_block = 0, ""  # "", "thinking", "text" or "tool_use": the kind of the block being written
    blocks: dict[int, int] = {}  # a streamed call's index -> its tool_use block's index
    finished: Finished | None = None
    try:
        async for event in generated:
            if isinstance(event, Finished):
                finished = event
                continue
            if isinstance(event, ToolCallDelta):
                if event.index not in blocks:
                    if open_block:
                        yield _sse("content_block_stop", {"index": index})
                        index += 1
                    blocks[event.index], open_block = index, "tool_use"
                    block = {"type": "tool_use", "id": event.id, "name": event.name, "input": {}}
                    yield _sse("content_block_start", {"index": index, "content_block": block})
                if event.arguments:
                    delta = {"type": "input_json_delta", "partial_json": event.arguments}
                    yield _sse("content_block_delta", {"index": blocks[event.index], "delta": delta})
                continue
            for kind, piece in (("thinking", event.reasoning), ("text", event.text)):
                if not piece:
                    continue
                if open_block != kind:
                    if open_block:
                        yield _sse("content_block_stop", {"index": index})
                        index += 1
                    empty = _thinking_block("") if kind == "thinking" else {"type": "text", "text": ""}
                    yield _sse("content_block_start", {"index": index, "content_block": empty})
                    open_block = kind
                if kind == "thinking" and reply.omit_thinking:
                    continue
                delta = {"type": f"{kind}_delta", kind: piece}
                yield _sse("content_block_delta", {"index": index, "delta": delta})
    except ApplianceError as exc:  # mid-stream (a remote lost, the engine failing): Anthropic's error event
        yield frame(dialect_error_body("/v1/messages", exc.status, exc), event="error")
        return
    finally:
        cancel()
    if open_block:
        yield _sse("content_block_stop", {"index": index})
        index += 1
    # Calls that came only whole with the end (a backend that does not stream them): one delta each.
    for position, block in enumerate(_tool_uses(finished)):
        if position in blocks:
            continue
        arguments = json.dumps(block["input"])
        yield _sse("content_block_start", {"index": index, "content_block": {**block, "input": {}}})
        delta = {"type": "input_json_delta", "partial_json": arguments}
        yield _sse("content_block_delta", {"index": index, "delta": delta})
        yield _sse("content_block_stop", {"index": index})
        index += 1
    usage = finished.usage if finished is not None else None
    reason, sequence = stop(finished)
    yield _sse("message_delta", {"delta": {"stop_reason": reason, "stop_sequence": sequence},
                                 "usage": {"output_tokens": usage.completion_tokens if usage else 0,
                                           "input_tokens": usage.prompt_tokens if usage else 0}})  # fmt: skip
    yield _sse("message_stop", {})
