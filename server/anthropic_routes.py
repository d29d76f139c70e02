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

from appliance import model_defaults
from appliance.backend import ChatParams, Event, Finished, Reasoning, ToolCallDelta
from appliance.config import PerModelSettings
from appliance.errors import ApplianceError, InvalidRequest
from server import generation
from server.compat_schemas import AnthropicBlock, AnthropicRequest
from server.errors import dialect_error_body
from server.openai_payloads import collect
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


def _image_url(block: AnthropicBlock, where: str) -> str:
    """An image block's source as an image URL: a data URL for base64 data, or the URL as it is."""
    source = block.source or {}
    if source.get("type") == "base64" and isinstance(source.get("data"), str):
        return f"data:{source.get('media_type') or 'image/png'};base64,{source['data']}"
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return str(source["url"])
    raise InvalidRequest(f"{where}: an image block needs a source of type base64 (with data) or url")


def _messages(body: AnthropicRequest) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if body.system:
        out.append({"role": "system", "content": _text(body.system, "system")})
    for index, message in enumerate(body.messages):
        where = f"messages.{index}"
        content = message.content
        blocks = [AnthropicBlock(type="text", text=content)] if isinstance(content, str) else content
        text: list[str] = []
        parts: list[dict[str, Any]] = []  # text and images, in order, when there are images
        thoughts: list[str] = []
        calls: list[dict[str, Any]] = []
        for block in blocks:
            if block.type == "text":
                text.append(block.text or "")
                parts.append({"type": "text", "text": block.text or ""})
            elif block.type == "image" and message.role == "user":
                parts.append({"type": "image_url", "image_url": {"url": _image_url(block, where)}})
            elif block.type == "thinking" and message.role == "assistant":  # a previous turn's thinking
                thoughts.append(block.thinking or "")
            elif block.type == "redacted_thinking" and message.role == "assistant":
                continue  # encrypted by Anthropic for its own models: nothing here can read it
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
        images = any(part["type"] == "image_url" for part in parts)
        if text or calls or images or message.role == "assistant":
            item: dict[str, Any] = {"role": message.role, "content": parts if images else "".join(text)}
            if calls:
                item["tool_calls"] = calls
            if thoughts:
                item["reasoning_content"] = "".join(thoughts)
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


def _params(body: AnthropicRequest, defaults: PerModelSettings) -> ChatParams:
    asked = {k: getattr(body, k) for k in ("temperature", "top_p", "top_k")}
    tools, choice = _tools(body)
    thinking = body.thinking
    reasoning = (
        Reasoning()
        if thinking is None
        else Reasoning(enabled=thinking.type == "enabled", budget_tokens=thinking.budget_tokens)
    )
    return ChatParams(messages=_messages(body), sampling=model_defaults.sampling(asked, defaults),
                      max_tokens=body.max_tokens, stop=tuple(body.stop_sequences or ()), tools=tools,
                      tool_choice=choice, reasoning=reasoning)  # fmt: skip


def _thinking_block(thinking: str) -> dict[str, Any]:
    # No signature: the thoughts are this machine's own, and nothing here checks one when they come back.
    return {"type": "thinking", "thinking": thinking, "signature": ""}


def _content(text: str, finished: Finished | None, thinking: str = "") -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [_thinking_block(thinking)] if thinking else []
    if text:
        blocks.append({"type": "text", "text": text})
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
    params = _params(body, request.app.state.manager.settings_for(body.model))
    run = await generation.generate(request, "/v1/messages", body.model, params)
    events = run.events
    message_id = f"msg_{uuid.uuid4().hex}"
    if not body.stream:
        try:
            collected = await collect(events)
        finally:
            run.cancel()
        finished = collected.finished
        usage = finished.usage if finished is not None else None
        return JSONResponse({
            "id": message_id, "type": "message", "role": "assistant", "model": body.model,
            "content": _content(collected.text, finished, collected.reasoning),
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
    """Anthropic's stream: message_start, a thinking block and a text block (each start/deltas/stop, the
    thinking first), a tool_use block per call (its arguments as input_json_delta fragments, as the model
    writes them), then message_delta (stop reason, output tokens) and message_stop."""
    start: dict[str, Any] = {
        "id": message_id, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0},
    }  # fmt: skip
    yield _sse("message_start", {"message": start})
    index, open_block = 0, ""  # "", "thinking", "text" or "tool_use": the kind of the block being written
    blocks: dict[int, int] = {}  # a streamed call's index -> its tool_use block's index
    finished: Finished | None = None
    try:
        async for event in events:
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
    for position, block in enumerate(_content("", finished)):
        if position in blocks:
            continue
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
