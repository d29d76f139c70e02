"""Anthropic's Messages API (`POST /v1/messages`), so clients written for it work against this machine:
text and tool use, whole or streamed as Anthropic's events, with its error shape. It runs on the same
models as the OpenAI routes, here or on a remote as the router says (server.generation)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from appliance.backend import ChatParams, Event, Finished, SamplingParams, TextDelta
from appliance.errors import ApplianceError, InvalidRequest
from server import generation
from server.compat_schemas import AnthropicBlock, AnthropicRequest
from server.errors import dialect_error_body
from server.openapi import GENERATION, doc
from server.response_schemas import AnthropicMessageOut
from server.schemas import read_body
from server.sse import frame

router = APIRouter()

_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def _text(content: str | list[AnthropicBlock] | None, where: str) -> str:
    """The text of a string or of a list of text blocks."""
    if content is None or isinstance(content, str):
        return content or ""
    for block in content:
        if block.type != "text":
            raise InvalidRequest(f"{where}: {block.type} blocks are not supported here (text only)")
    return "".join(block.text or "" for block in content)


def _messages(body: AnthropicRequest) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if body.system:
        out.append({"role": "system", "content": _text(body.system, "system")})
    for index, message in enumerate(body.messages):
        where = f"messages.{index}"
        content = message.content
        blocks = [AnthropicBlock(type="text", text=content)] if isinstance(content, str) else content
        text: list[str] = []
        calls: list[dict[str, Any]] = []
        for block in blocks:
            if block.type == "text":
                text.append(block.text or "")
            elif block.type == "tool_use" and message.role == "assistant":
                if not block.name:
                    raise InvalidRequest(f"{where}: a tool_use block needs a name")
                arguments = json.dumps(block.input or {})
                calls.append({"id": block.id, "type": "function",
                              "function": {"name": block.name, "arguments": arguments}})  # fmt: skip
            elif block.type == "tool_result" and message.role == "user":
                out.append({"role": "tool", "tool_call_id": block.tool_use_id,
                            "content": _text(block.content, f"{where}.tool_result")})  # fmt: skip
            else:
                raise InvalidRequest(f"{where}: {block.type} blocks are not supported (text and tools only)")
        if text or calls or message.role == "assistant":
            item: dict[str, Any] = {"role": message.role, "content": "".join(text)}
            if calls:
                item["tool_calls"] = calls
            out.append(item)
    return out


def _tools(body: AnthropicRequest) -> tuple[list[dict[str, Any]], Any]:
    tools = [
        {"type": "function", "function": {"name": t.name, "description": t.description or "",
                                          "parameters": t.input_schema or {"type": "object"}}}
        for t in body.tools or []
    ]  # fmt: skip
    kind = body.tool_choice.type if body.tool_choice is not None else None
    if kind == "any":
        return tools, "required"
    if kind == "tool":
        assert body.tool_choice is not None
        return tools, {"type": "function", "function": {"name": body.tool_choice.name}}
    if kind == "none":
        return [], None
    return tools, None


def _params(body: AnthropicRequest) -> ChatParams:
    values = {k: v for k in ("temperature", "top_p", "top_k") if (v := getattr(body, k)) is not None}
    tools, choice = _tools(body)
    return ChatParams(messages=_messages(body), sampling=SamplingParams(**values),
                      max_tokens=body.max_tokens, stop=tuple(body.stop_sequences or ()), tools=tools,
                      tool_choice=choice)  # fmt: skip


def _content(text: str, finished: Finished | None) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    for call in finished.tool_calls if finished is not None else ():
        try:
            arguments = json.loads(call.arguments or "{}")
        except ValueError:
            arguments = {}
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": arguments})
    return blocks


@router.post(
    "/v1/messages",
    **doc("anthropic", body=AnthropicRequest, ok=AnthropicMessageOut, stream="sse", errors=GENERATION),
)
async def messages(request: Request) -> Response:
    body = await read_body(request, AnthropicRequest)
    params = _params(body)
    run = await generation.generate(request, "/v1/messages", body.model, params)
    events = run.events
    message_id = f"msg_{uuid.uuid4().hex}"
    if not body.stream:
        parts: list[str] = []
        finished: Finished | None = None
        try:
            async for event in events:
                if isinstance(event, TextDelta):
                    parts.append(event.text)
                elif isinstance(event, Finished):
                    finished = event
        finally:
            run.cancel()
        usage = finished.usage if finished is not None else None
        return JSONResponse({
            "id": message_id, "type": "message", "role": "assistant", "model": body.model,
            "content": _content("".join(parts), finished),
            "stop_reason": _STOP_REASONS.get(finished.finish_reason, "end_turn") if finished else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": usage.prompt_tokens if usage else 0,
                      "output_tokens": usage.completion_tokens if usage else 0},
        })  # fmt: skip
    return StreamingResponse(_events(events, run.cancel, message_id, body.model),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})  # fmt: skip


def _sse(kind: str, data: dict[str, Any]) -> bytes:
    return frame({"type": kind, **data}, event=kind)


async def _events(
    events: AsyncIterator[Event], cancel: Any, message_id: str, model: str
) -> AsyncIterator[bytes]:
    """Anthropic's stream: message_start, a text block's start/deltas/stop, tool_use blocks, then
    message_delta (stop reason, output tokens) and message_stop."""
    start: dict[str, Any] = {
        "id": message_id, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0},
    }  # fmt: skip
    yield _sse("message_start", {"message": start})
    index, text_open = 0, False
    finished: Finished | None = None
    try:
        async for event in events:
            if isinstance(event, TextDelta) and event.text:
                if not text_open:
                    empty = {"type": "text", "text": ""}
                    yield _sse("content_block_start", {"index": index, "content_block": empty})
                    text_open = True
                delta = {"type": "text_delta", "text": event.text}
                yield _sse("content_block_delta", {"index": index, "delta": delta})
            elif isinstance(event, Finished):
                finished = event
    except ApplianceError as exc:  # mid-stream (a remote lost, the engine failing): Anthropic's error event
        yield frame(dialect_error_body("/v1/messages", exc.status, exc), event="error")
        return
    finally:
        cancel()
    if text_open:
        yield _sse("content_block_stop", {"index": index})
        index += 1
    for block in _content("", finished):
        arguments = json.dumps(block["input"])
        yield _sse("content_block_start", {"index": index, "content_block": {**block, "input": {}}})
        delta = {"type": "input_json_delta", "partial_json": arguments}
        yield _sse("content_block_delta", {"index": index, "delta": delta})
        yield _sse("content_block_stop", {"index": index})
        index += 1
    usage = finished.usage if finished is not None else None
    reason = _STOP_REASONS.get(finished.finish_reason, "end_turn") if finished else "end_turn"
    yield _sse("message_delta", {"delta": {"stop_reason": reason, "stop_sequence": None},
                                 "usage": {"output_tokens": usage.completion_tokens if usage else 0,
                                           "input_tokens": usage.prompt_tokens if usage else 0}})  # fmt: skip
    yield _sse("message_stop", {})
