"""Anthropic's Messages API (`POST /v1/messages`), so clients written for it work against this machine:
text and tool use, whole or streamed as Anthropic's events, with its error shape. It runs on the same
models and engine as the OpenAI routes (requests stay on this machine)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from appliance.backend import ChatParams, Event, Finished, TextDelta
from appliance.engine.params import SamplingParams
from appliance.errors import ApplianceError, ModelNotFound, Unauthorized
from appliance.manager import ModelManager
from server.compat_schemas import AnthropicParams, ValidationError, problem
from server.metrics import Metrics

router = APIRouter()

_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


class _BadRequest(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"type": "error", "error": {"type": kind, "message": message}}, status_code=status)


def _error_for(exc: ApplianceError) -> JSONResponse:
    if isinstance(exc, ModelNotFound):
        return _error(404, "not_found_error", exc.message)
    if isinstance(exc, Unauthorized):
        return _error(401, "authentication_error", exc.message)
    if exc.status == 429:
        return _error(429, "rate_limit_error", exc.message)
    if exc.status == 503:
        return _error(503, "overloaded_error", exc.message)
    if exc.status >= 500:
        return _error(exc.status, "api_error", exc.message)
    return _error(exc.status, "invalid_request_error", exc.message)


def _text(content: Any, where: str) -> str:
    """The text of a string or of a list of text blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if not isinstance(block, dict) or block.get("type") != "text":
                kind = block.get("type") if isinstance(block, dict) else type(block).__name__
                raise _BadRequest(f"{where}: {kind} blocks are not supported here (text only)")
            parts.append(str(block.get("text", "")))
        return "".join(parts)
    raise _BadRequest(f"{where} must be a string or a list of content blocks")


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        out.append({"role": "system", "content": _text(system, "system")})
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _BadRequest("messages: a non-empty list is required")
    for index, message in enumerate(messages):
        where = f"messages.{index}"
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise _BadRequest(f"{where}.role must be user or assistant")
        content = message.get("content")
        blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
        text: list[str] = []
        calls: list[dict[str, Any]] = []
        for block in blocks:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text":
                text.append(str(block.get("text", "")))
            elif kind == "tool_use" and message["role"] == "assistant":
                if not isinstance(block.get("name"), str) or not block["name"]:
                    raise _BadRequest(f"{where}: a tool_use block needs a name")
                calls.append({"id": block.get("id"), "type": "function",
                              "function": {"name": block.get("name"),
                                           "arguments": json.dumps(block.get("input") or {})}})  # fmt: skip
            elif kind == "tool_result" and message["role"] == "user":
                result = block.get("content", "")
                out.append({"role": "tool", "tool_call_id": block.get("tool_use_id"),
                            "content": _text(result, f"{where}.tool_result")})  # fmt: skip
            else:
                raise _BadRequest(f"{where}: {kind} blocks are not supported (text and tools only)")
        if text or calls or message["role"] == "assistant":
            item: dict[str, Any] = {"role": message["role"], "content": "".join(text)}
            if calls:
                item["tool_calls"] = calls
            out.append(item)
    return out


def _tools(body: dict[str, Any], params: AnthropicParams) -> tuple[list[dict[str, Any]], Any]:
    tools = [
        {"type": "function", "function": {"name": t.name, "description": t.description or "",
                                          "parameters": t.input_schema or {"type": "object"}}}
        for t in params.tools or []
    ]  # fmt: skip
    choice = body.get("tool_choice") or {}
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "any":
        return tools, "required"
    if kind == "tool":
        return tools, {"type": "function", "function": {"name": choice.get("name")}}
    if kind == "none":
        return [], None
    return tools, None


def _params(body: dict[str, Any]) -> ChatParams:
    if not isinstance(body.get("max_tokens"), int) or isinstance(body["max_tokens"], bool):
        raise _BadRequest("max_tokens: a positive integer is required")
    try:
        params = AnthropicParams.model_validate(body)
    except ValidationError as exc:
        raise _BadRequest(problem(exc)) from None
    values = {k: v for k in ("temperature", "top_p", "top_k") if (v := getattr(params, k)) is not None}
    tools, choice = _tools(body, params)
    return ChatParams(messages=_messages(body), sampling=SamplingParams(**values),
                      max_tokens=params.max_tokens, stop=tuple(params.stop_sequences or ()), tools=tools,
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


@router.post("/v1/messages")
async def messages(request: Request) -> Response:
    try:
        body = json.loads(await request.body() or b"{}")
        if not isinstance(body, dict):
            raise _BadRequest("the request body must be a JSON object")
        request.state.asked_model = body.get("model")
        if not isinstance(body.get("model"), str):
            raise _BadRequest("model: required")
        params = _params(body)
        manager: ModelManager = request.app.state.manager
        async with manager.use(body["model"]) as backend:
            request.state.model = backend.model_id
            stream = await backend.chat(params)
    except ValueError:
        return _error(400, "invalid_request_error", "the request body is not JSON")
    except _BadRequest as exc:
        return _error(400, "invalid_request_error", exc.message)
    except ApplianceError as exc:
        return _error_for(exc)
    metrics: Metrics = request.app.state.metrics
    events = metrics.observe(stream, request.scope["state"], "/v1/messages", backend.model_id)
    message_id = f"msg_{uuid.uuid4().hex}"
    if not body.get("stream"):
        parts: list[str] = []
        finished: Finished | None = None
        try:
            async for event in events:
                if isinstance(event, TextDelta):
                    parts.append(event.text)
                elif isinstance(event, Finished):
                    finished = event
        except ApplianceError as exc:
            return _error_for(exc)
        finally:
            stream.cancel()
        usage = finished.usage if finished is not None else None
        return JSONResponse({
            "id": message_id, "type": "message", "role": "assistant", "model": body["model"],
            "content": _content("".join(parts), finished),
            "stop_reason": _STOP_REASONS.get(finished.finish_reason, "end_turn") if finished else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": usage.prompt_tokens if usage else 0,
                      "output_tokens": usage.completion_tokens if usage else 0},
        })  # fmt: skip
    return StreamingResponse(_events(events, stream.cancel, message_id, body["model"]),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})  # fmt: skip


def _sse(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()


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
    except ApplianceError as exc:
        yield _sse("error", {"error": {"type": "api_error", "message": exc.message}})
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
