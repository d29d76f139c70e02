"""Anthropic's Messages API, so clients written for it (the anthropic SDKs, LangChain's ChatAnthropic,
Claude Code) work against this machine: `POST /v1/messages` (text, tool use, thinking, structured output,
whole or streamed as Anthropic's events) and `POST /v1/messages/count_tokens`, with Anthropic's error
shape for every error under /v1/messages, unknown paths included. It runs on the same models as the OpenAI
routes, here or on a remote as the router says (server.generation); the request's translation is
server.anthropic_translate, the answer's server.anthropic_stream."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from appliance.errors import ApplianceError
from server import generation
from server.anthropic_schemas import AnthropicPrompt, AnthropicRequest
from server.anthropic_stream import Reply, events, message
from server.anthropic_translate import chat_params
from server.openai_payloads import collect
from server.openapi import GENERATION, doc
from server.response_schemas import AnthropicMessageOut, AnthropicTokenCount
from server.schemas import read_body

router = APIRouter()


class NoSuchEndpoint(ApplianceError):
    status = 404
    error_type = "invalid_request_error"
    code = "not_found"


@router.post(
    "/v1/messages",
    **doc("anthropic", body=AnthropicRequest, ok=AnthropicMessageOut, stream="sse", errors=GENERATION),
)
async def messages(request: Request) -> Response:
    body = await read_body(request, AnthropicRequest)
    # metadata.user_id is read and dropped on purpose: nothing here keeps anything per user.
    params = chat_params(body, request.app.state.manager.settings_for(body.model))
    run = await generation.generate(request, "/v1/messages", body.model, params)
    omit = body.thinking is not None and body.thinking.display == "omitted"
    reply = Reply(f"msg_{uuid.uuid4().hex}", body.model, omit_thinking=omit)
    if not body.stream:
        try:
            collected = await collect(run.events)
        finally:
            run.cancel()
        return JSONResponse(message(reply, collected.text, collected.reasoning, collected.finished))
    return StreamingResponse(events(reply, run.events, run.cancel, run.prompt_tokens),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})  # fmt: skip


@router.post(
    "/v1/messages/count_tokens",
    **doc("anthropic", body=AnthropicPrompt, ok=AnthropicTokenCount, errors=GENERATION),
)
async def count_tokens(request: Request) -> JSONResponse:
    """The input tokens `POST /v1/messages` would count for the same body: the same translation, chat
    template and tokenizer, on the model here (a model named through a remote, ``REMOTE/NAME``, is
    counted by the model of that name here)."""
    body = await read_body(request, AnthropicPrompt)
    params = chat_params(body, request.app.state.manager.settings_for(body.model))
    tokens = await generation.count_chat_tokens(request, "/v1/messages/count_tokens", body.model, params)
    return JSONResponse({"input_tokens": tokens})


@router.api_route(
    "/v1/messages/{rest:path}",
    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
    include_in_schema=False,
)
async def unknown(request: Request, rest: str) -> Response:
    """Anthropic's other endpoints (message batches, ...) are not served: a 404 that says so, in
    Anthropic's shape (server.errors picks the shape by path)."""
    raise NoSuchEndpoint(
        f"{request.method} {request.url.path} is not served here; under /v1/messages this server has "
        "POST /v1/messages and POST /v1/messages/count_tokens (message batches are not supported)"
    )
