"""llama-server's own endpoints, in its shapes (tools/server/README.md): POST /infill (fill-in-the-middle
with repository context, llama-server's completion answer, streamed as SSE without [DONE]), /tokenize,
/detokenize and /apply-template.

llama-server serves one model; here each request names its model in ``model`` (absent: the default
model), and the model is loaded if it is not. Errors are OpenAI's shape, as llama-server's are. These are
served by the models here, never escalated: a remote's tokenizer and template are not ours to read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from appliance import model_defaults
from appliance.backend import ChatParams, CompletionParams, Event, Finished, Infill, TextDelta
from appliance.manager import ModelManager
from server import generation
from server import openai_payloads as payloads
from server.llama_server_schemas import DetokenizeRequest, InfillRequest, TokenizeRequest
from server.openai_routes import _sampling, _shown, _wait_for_load, chat_params
from server.openapi import GENERATION, MODEL, doc
from server.record import record_of
from server.schemas import ChatCompletionRequest, read_body
from server.sse import sse_response

router = APIRouter()


def manager_of(request: Request) -> ModelManager:
    manager: ModelManager = request.app.state.manager
    return manager


def served(request: Request, model_id: str) -> str:
    """``model_id`` named as the model that serves the request (its log line and metrics)."""
    record_of(request.scope).serve(request.url.path, model_id)
    return model_id


def _completion_answer(text: str, finished: Finished | None, model: str) -> dict[str, Any]:
    """llama-server's final completion object (the fields it has that this engine knows)."""
    usage = finished.usage if finished is not None else None
    stopped_by = "limit" if finished is not None and finished.finish_reason == "length" else "eos"
    return {
        "index": 0, "content": text, "tokens": [], "id_slot": -1, "stop": True, "model": model,
        "tokens_predicted": usage.completion_tokens if usage else 0,
        "tokens_evaluated": usage.prompt_tokens if usage else 0,
        "tokens_cached": usage.cached_tokens if usage else 0,
        "truncated": False, "stop_type": stopped_by, "stopping_word": "",
    }  # fmt: skip


async def _infill_chunks(events: AsyncIterator[Event], model: str) -> AsyncIterator[dict[str, Any]]:
    async for event in events:
        if isinstance(event, TextDelta) and event.text:
            yield {"index": 0, "content": event.text, "tokens": [], "stop": False, "id_slot": -1}
        elif isinstance(event, Finished):
            yield _completion_answer("", event, model)


@router.post("/infill", **doc("openai", body=InfillRequest, stream="sse", errors=GENERATION))
async def infill(request: Request) -> Response:
    """The middle between ``input_prefix`` and ``input_suffix``, with ``input_extra`` files before them,
    framed by the model's FIM tokens (appliance.engine.infill); a 400 for a model without them."""
    body = await read_body(request, InfillRequest)
    manager = manager_of(request)
    extra = tuple((chunk.filename, chunk.text) for chunk in body.input_extra)
    fill = Infill(prefix=body.input_prefix, suffix=body.input_suffix, extra=extra, prompt=body.prompt)
    params = CompletionParams(
        prompt=body.input_prefix,
        sampling=_sampling(body, None, manager.settings_for(body.model)),
        max_tokens=body.reply_tokens(),
        stop=body.stop_list(),
        grammar=body.grammar_text(),
        infill=fill,
    )
    run = await generation.generate(request, "/infill", body.model, params, wait=_wait_for_load(request))
    model = _shown(request, body.model, run.model_id)
    if body.stream:
        return sse_response(_infill_chunks(run.events, model), run.cancel, done=False)
    try:
        collected = await payloads.collect(run.events)
    finally:
        run.cancel()
    return JSONResponse(_completion_answer(collected.text, collected.finished, model))


def _piece(data: bytes) -> str | list[int]:
    """A token's piece as llama-server writes it: text when it is valid UTF-8, else its bytes."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return list(data)


@router.post("/tokenize", **doc("openai", body=TokenizeRequest, errors=MODEL))
async def tokenize(request: Request) -> dict[str, Any]:
    body = await read_body(request, TokenizeRequest)
    async with manager_of(request).use(body.model, wait=_wait_for_load(request)) as backend:
        served(request, backend.model_id)
        tokens = await backend.tokenize(
            body.content, add_special=body.add_special, parse_special=body.parse_special
        )
        if not body.with_pieces:
            return {"tokens": tokens}
        pieces = backend.pieces(tokens)
    pairs = zip(tokens, pieces, strict=True)
    return {"tokens": [{"id": token, "piece": _piece(piece)} for token, piece in pairs]}


@router.post("/detokenize", **doc("openai", body=DetokenizeRequest, errors=MODEL))
async def detokenize(request: Request) -> dict[str, Any]:
    body = await read_body(request, DetokenizeRequest)
    async with manager_of(request).use(body.model, wait=_wait_for_load(request)) as backend:
        pieces = backend.pieces(body.tokens)
        served(request, backend.model_id)
    return {"content": b"".join(pieces).decode("utf-8", errors="replace")}


@router.post("/apply-template", **doc("openai", body=ChatCompletionRequest, errors=MODEL))
async def apply_template(request: Request) -> dict[str, Any]:
    """The prompt a /v1/chat/completions request with this body would generate after: the model's
    template, the model's configured defaults (a system prompt) and the tools, rendered as the chat
    would render them."""
    body = await read_body(request, ChatCompletionRequest)
    manager = manager_of(request)
    params = model_defaults.applied(chat_params(request, body), manager.settings_for(body.model))
    async with manager.use(body.model, wait=_wait_for_load(request)) as backend:
        served(request, backend.model_id)
        return {"prompt": await backend.apply_template(cast(ChatParams, params))}
