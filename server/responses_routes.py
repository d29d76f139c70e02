"""OpenAI's Responses API: `POST /v1/responses` (whole or streamed as its semantic events),
`GET /v1/responses/{id}` and `DELETE /v1/responses/{id}`.

A request is read into a chat on the seam (ChatParams: server/responses_items.py) and served like any
chat, here or on a remote as the router says (server.generation): remotes are spoken to in chat
completions. With ``store`` (OpenAI's default) the response and its conversation are kept in the daemon's
memory, bounded (server/responses_store.py), for ``previous_response_id``."""

from __future__ import annotations

import logging
import time
from typing import Any, cast

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from appliance import model_defaults
from appliance.backend import ChatParams, Finished
from appliance.errors import ApplianceError, InvalidRequest
from appliance.manager import ModelManager
from server import generation
from server.openai_payloads import collect
from server.openai_routes import reasoning_of
from server.openapi import GENERATION, PROTECTED, doc
from server.responses_items import Echo, chat_messages, new_id, output_items, request_items, response_object
from server.responses_schemas import (
    ResponseDeleted,
    ResponseObject,
    ResponsesHostedTool,
    ResponsesRequest,
    ResponsesTool,
)
from server.responses_store import ResponseStore
from server.responses_stream import response_events
from server.schemas import read_body
from server.sse import frame

log = logging.getLogger(__name__)
router = APIRouter()
_LOGPROBS = "message.output_text.logprobs"


class ResponseNotFound(ApplianceError):
    status = 404
    error_type = "invalid_request_error"
    code = "not_found"


def _store(request: Request) -> ResponseStore:
    store: ResponseStore = request.app.state.responses
    return store


def _functions(body: ResponsesRequest) -> dict[str, tuple[ResponsesTool, str | None]]:
    """The request's function tools by name, each with its namespace (None at the top level). Hosted
    tools (web search, file search, ...) are left out, logged: nothing here runs them."""
    out: dict[str, tuple[ResponsesTool, str | None]] = {}
    hosted = []
    for index, tool in enumerate(body.tools or []):
        if isinstance(tool, ResponsesHostedTool):
            hosted.append(tool.type)
            continue
        grouped = [(tool, None)] if isinstance(tool, ResponsesTool) else [(t, tool.name) for t in tool.tools]
        for function, namespace in grouped:
            if function.name in out:
                raise InvalidRequest(f"tools.{index}: two tools are named {function.name!r}", param="tools")
            out[function.name] = (function, namespace)
    if hosted:
        log.warning("/v1/responses: hosted tools left out (nothing here runs them): %s", ", ".join(hosted),
                    extra={"ignored_tools": hosted})  # fmt: skip
    return out


def _tools(
    body: ResponsesRequest, functions: dict[str, tuple[ResponsesTool, str | None]]
) -> tuple[list[dict[str, Any]], Any]:
    """The request's function tools as chat tools, and its tool_choice as chat's (a named function, or
    ``allowed_tools``: the tools narrowed to those, with its mode)."""
    fields = {"name", "description", "parameters"}
    tools = {name: {"type": "function", "function": tool.model_dump(include=fields, exclude_none=True)}
             for name, (tool, _) in functions.items()}  # fmt: skip
    choice = body.tool_choice
    if not isinstance(choice, dict):
        return list(tools.values()), choice
    kind = choice.get("type")
    if kind == "function":
        name = choice.get("name") or (choice.get("function") or {}).get("name")
        return list(tools.values()), {"type": "function", "function": {"name": name}}
    if kind == "allowed_tools" and choice.get("mode") in ("auto", "required"):
        allowed = [str(t.get("name")) for t in choice.get("tools") or [] if isinstance(t, dict)]
        unknown = [name for name in allowed if name not in tools]
        if unknown or not allowed:
            raise InvalidRequest(f"tool_choice.tools names unknown tools: {unknown}", param="tool_choice")
        return [tools[name] for name in allowed], choice["mode"]
    raise InvalidRequest(f"tool_choice of type {kind!r} is not supported here: none, auto, required, a "
                         "function, or allowed_tools", param="tool_choice")  # fmt: skip


def _json_schema(body: ResponsesRequest) -> dict[str, Any] | None:
    fmt = body.text.format if body.text else None
    if fmt is None or fmt.type == "text":
        return None
    return fmt.schema_ if fmt.type == "json_schema" else {"type": "object"}


def _params(
    body: ResponsesRequest,
    manager: ModelManager,
    conversation: list[dict[str, Any]],
    where: list[str],
    functions: dict[str, tuple[ResponsesTool, str | None]],
) -> ChatParams:
    effort = body.reasoning.effort if body.reasoning else None
    asked = {name: getattr(body, name) for name in ("temperature", "top_p", "top_k", "min_p", "seed")}
    logprobs = _LOGPROBS in (body.include or [])
    tools, choice = _tools(body, functions)
    return ChatParams(
        messages=chat_messages(conversation, body.instructions, where),
        sampling=model_defaults.sampling(asked, manager.settings_for(body.model)),
        max_tokens=body.max_output_tokens,
        top_logprobs=(body.top_logprobs or 0) if logprobs else None,
        json_schema=_json_schema(body),
        grammar=body.grammar or None,
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=body.parallel_tool_calls,
        # OpenAI's efforts past "high" are "high" here: no template knows more.
        reasoning=reasoning_of("high" if effort in ("xhigh", "max") else effort),
        template_kwargs=body.chat_template_kwargs or {},
    )


@router.post(
    "/v1/responses",
    **doc("openai", body=ResponsesRequest, ok=ResponseObject, stream="sse", errors=GENERATION),
)
async def create_response(request: Request) -> Response:
    body = await read_body(request, ResponsesRequest)
    store = _store(request)
    earlier: list[dict[str, Any]] = []
    if body.previous_response_id is not None:
        kept = store.get(body.previous_response_id)
        if kept is None:
            raise ResponseNotFound(f"Previous response with id '{body.previous_response_id}' not found.",
                                   param="previous_response_id")  # fmt: skip
        earlier = kept.conversation
    asked = request_items(body)
    where = ["previous_response_id"] * len(earlier) + [f"input.{i}" for i in range(len(asked))]
    manager: ModelManager = request.app.state.manager
    functions = _functions(body)
    params = _params(body, manager, [*earlier, *asked], where, functions)
    if body.truncation == "auto":
        log.info("/v1/responses: truncation 'auto' is read as 'disabled': nothing is dropped to fit")
    wait = request.headers.get("x-appliance-wait-for-load", "").strip().lower() not in ("false", "0", "no")
    run = await generation.generate(request, "/v1/responses", body.model, params, wait=wait)
    shown = body.model if body.model and manager.is_alias(body.model) else run.model_id
    sampling = params.sampling
    echo = Echo(new_id("resp"), int(time.time()), shown, body, sampling.temperature, sampling.top_p)
    logprobs = params.top_logprobs is not None
    namespaces = {name: ns for name, (_, ns) in functions.items() if ns is not None}

    def finish(status: str, output: list[dict[str, Any]], end: Finished | None,
               error: dict[str, Any] | None) -> dict[str, Any]:  # fmt: skip
        response = response_object(echo, status, output, end.usage if end else None, error)
        if body.store and status != "failed":
            store.put(response, [*earlier, *asked, *output])
        return response

    if body.stream:
        started = response_object(echo, "in_progress", [])
        events = response_events(run.events, started, finish, logprobs=logprobs, namespaces=namespaces)

        async def sse() -> Any:
            try:
                async for event in events:
                    yield frame(event, event=event["type"])
            finally:
                run.cancel()

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(sse(), media_type="text/event-stream", headers=headers)
    try:
        collected = await collect(run.events)
    finally:
        run.cancel()
    end = cast(Finished, collected.finished)
    lps = collected.logprobs if logprobs else None
    output = output_items(collected.text, collected.reasoning, end, lps, namespaces)
    status = "incomplete" if end.finish_reason == "length" else "completed"
    return JSONResponse(finish(status, output, end, None))


def _kept(request: Request, response_id: str) -> dict[str, Any]:
    kept = _store(request).get(response_id)
    if kept is None:
        raise ResponseNotFound(f"Response with id '{response_id}' not found.")
    return kept.response


@router.get("/v1/responses/{response_id}", **doc("openai", ok=ResponseObject, errors=(*PROTECTED, 404)))
async def get_response(response_id: str, request: Request) -> dict[str, Any]:
    return _kept(request, response_id)


@router.delete("/v1/responses/{response_id}", **doc("openai", ok=ResponseDeleted, errors=(*PROTECTED, 404)))
async def delete_response(response_id: str, request: Request) -> dict[str, Any]:
    _kept(request, response_id)
    _store(request).delete(response_id)
    return {"id": response_id, "object": "response", "deleted": True}
