"""OpenAI-compatible routes: thin handlers that validate, call a backend, and shape the answer."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from appliance import model_defaults
from appliance.backend import ChatParams, CompletionParams, Effort, Event, Infill, Reasoning, SamplingParams
from appliance.config import PerModelSettings
from appliance.errors import InvalidRequest
from appliance.manager import ModelManager
from server import generation
from server import openai_payloads as payloads
from server.escalation import escalate
from server.openapi import GENERATION, PROTECTED, doc
from server.response_schemas import ChatCompletion, Completion, EmbeddingList, ModelCard, ModelList
from server.schemas import (
    INT32_MAX,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    ResponseFormat,
    _Sampling,
    read_body,
)
from server.sse import sse_response

log = logging.getLogger(__name__)
router = APIRouter()

_DISCONNECT_POLL_S = 0.25


def _manager(request: Request) -> ModelManager:
    manager: ModelManager = request.app.state.manager
    return manager


def _wait_for_load(request: Request) -> bool:
    """False when the client asked for a 503 rather than waiting for its model to load."""
    return request.headers.get("x-appliance-wait-for-load", "").strip().lower() not in ("false", "0", "no")


def _sampling(body: _Sampling, n_vocab: int | None, defaults: PerModelSettings) -> SamplingParams:
    bias: dict[int, float] = {}
    for key, value in (body.logit_bias or {}).items():
        try:
            token = int(key)
        except ValueError:
            raise InvalidRequest(f"logit_bias keys are token ids; got {key!r}", param="logit_bias") from None
        # A token id past a C int would reach llama.cpp cut to 32 bits, naming another token.
        if token < 0 or token > INT32_MAX or (n_vocab is not None and token >= n_vocab):
            raise InvalidRequest(
                f"logit_bias names token {token}, outside the vocabulary", param="logit_bias"
            )
        bias[token] = max(-100.0, min(100.0, value))

    names = ("temperature", "top_k", "top_p", "min_p", "presence_penalty", "frequency_penalty",
             "repeat_penalty", "seed")  # fmt: skip
    asked = {name: getattr(body, name) for name in names}
    extras = {"logit_bias": bias, "ignore_eos": body.ignore_eos, "draft_max": body.speculative_n_max}
    return model_defaults.sampling({**asked, **extras}, defaults)


def _schema(response_format: ResponseFormat | None) -> dict[str, Any] | None:
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return {"type": "object"}
    assert response_format.json_schema is not None
    return response_format.json_schema.schema_


def reasoning_of(effort: str | None, budget: int | None = None) -> Reasoning:
    """OpenAI's ``reasoning_effort``: "none" turns thinking off; the others ask for that much of it.
    llama-server's ``reasoning_budget_tokens`` bounds the thoughts (-1: no bound)."""
    budget = None if budget is None or budget < 0 else budget
    if effort is None:
        return Reasoning(budget_tokens=budget)
    if effort == "none":
        return Reasoning(enabled=False)
    return Reasoning(enabled=True, effort=cast(Effort, effort), budget_tokens=budget)


def _messages(body: ChatCompletionRequest) -> list[dict[str, Any]]:
    out = []
    for index, message in enumerate(body.messages):
        try:
            text = message.seam_content()
        except ValueError as exc:
            raise InvalidRequest(str(exc), param=f"messages.{index}.content") from None
        item: dict[str, Any] = {
            # Templates know "system"; OpenAI's newer "developer" role means the same to them.
            "role": "system" if message.role == "developer" else message.role,
            "content": text,
        }
        if message.name:
            item["name"] = message.name
        if message.tool_calls:
            item["tool_calls"] = [call.model_dump(exclude_none=True) for call in message.tool_calls]
        if message.tool_call_id:
            item["tool_call_id"] = message.tool_call_id
        if message.reasoning_content and message.role == "assistant":  # a previous turn's thinking
            item["reasoning_content"] = message.reasoning_content
        out.append(item)
    return out


async def _gather(
    cancel: Callable[[], None], events: AsyncIterator[Event], request: Request
) -> payloads.Collected | None:
    """Collect a whole generation; None (and the generation stopped) if the client went away."""
    task = asyncio.ensure_future(payloads.collect(events))
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=_DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                return None
    finally:
        cancel()
        # Also when this handler is cancelled (its client left: server.disconnects; a shutdown cut it): the
        # collecting task ends, and logs the request as cancelled, before the handler does.
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _shown(request: Request, asked: str | None, served: str) -> str:
    """The model an answer names: the alias the client asked for (as Ollama and LM Studio do), else the
    model that served it."""
    return asked if asked and _manager(request).is_alias(asked) else served


def _meta(prefix: str, model: str) -> payloads.Meta:
    return payloads.Meta(id=f"{prefix}-{uuid.uuid4().hex}", created=int(time.time()), model=model)


@router.post(
    "/v1/chat/completions",
    **doc("openai", body=ChatCompletionRequest, ok=ChatCompletion, stream="sse", errors=GENERATION),
)
async def chat_completions(request: Request) -> Response:
    body = await read_body(request, ChatCompletionRequest)
    escalated = await escalate(request, "/v1/chat/completions", body.model)
    if escalated is not None:
        return escalated
    params = chat_params(request, body)
    run = await generation.generate(request, "/v1/chat/completions", body.model, params,
                                    wait=_wait_for_load(request), escalate=False)  # fmt: skip
    meta = _meta("chatcmpl", _shown(request, body.model, run.model_id))
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        chunks = payloads.chat_chunks(run.events, meta, logprobs=body.logprobs, include_usage=include_usage)
        return sse_response(chunks, run.cancel)
    collected = await _gather(run.cancel, run.events, request)
    if collected is None:
        return Response(status_code=499)
    return JSONResponse(payloads.chat_completion(collected, meta, logprobs=body.logprobs))


def chat_params(request: Request, body: ChatCompletionRequest) -> ChatParams:
    """A chat completion request in the core's terms (shared with /apply-template, which renders what
    this chat would)."""
    return ChatParams(
        messages=_messages(body),
        sampling=_sampling(body, None, _manager(request).settings_for(body.model)),
        max_tokens=body.max_completion_tokens or body.max_tokens,
        stop=body.stop_list(),
        top_logprobs=(body.top_logprobs or 0) if body.logprobs else None,
        json_schema=_schema(body.response_format),
        grammar=body.grammar_text(),
        tools=[tool.model_dump(exclude_none=True) for tool in body.tools or []],
        tool_choice=body.tool_choice,
        parallel_tool_calls=body.parallel_tool_calls,
        reasoning=reasoning_of(body.reasoning_effort, body.reasoning_budget_tokens),
        template_kwargs=body.chat_template_kwargs or {},
    )


@router.post(
    "/v1/completions",
    **doc("openai", body=CompletionRequest, ok=Completion, stream="sse", errors=GENERATION),
)
async def completions(request: Request) -> Response:
    body = await read_body(request, CompletionRequest)
    escalated = await escalate(request, "/v1/completions", body.model)
    if escalated is not None:
        return escalated
    # The validator reduced the prompt to one: text or token ids.
    prompt = cast("str | list[int]", body.prompt)
    params = CompletionParams(
        prompt=prompt,
        sampling=_sampling(body, None, _manager(request).settings_for(body.model)),
        max_tokens=body.max_tokens,
        stop=body.stop_list(),
        top_logprobs=body.logprobs,
        echo=body.echo,
        json_schema=_schema(body.response_format),
        grammar=body.grammar_text(),
        # The validator allows a suffix with a text prompt only: the middle goes between them.
        infill=Infill(prefix=cast(str, prompt), suffix=body.suffix) if body.suffix else None,
    )
    run = await generation.generate(request, "/v1/completions", body.model, params,
                                    wait=_wait_for_load(request), escalate=False)  # fmt: skip
    meta = _meta("cmpl", _shown(request, body.model, run.model_id))
    want_logprobs = body.logprobs is not None
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        chunks = payloads.completion_chunks(
            run.events, meta, logprobs=want_logprobs, include_usage=include_usage
        )
        return sse_response(chunks, run.cancel)
    collected = await _gather(run.cancel, run.events, request)
    if collected is None:
        return Response(status_code=499)
    return JSONResponse(payloads.completion(collected, meta, logprobs=want_logprobs))


@router.post("/v1/embeddings", **doc("openai", body=EmbeddingRequest, ok=EmbeddingList, errors=GENERATION))
async def embeddings(request: Request) -> Response:
    body = await read_body(request, EmbeddingRequest)
    result, model_id = await generation.embed(request, "/v1/embeddings", body.model, body.inputs(),
                                              wait=_wait_for_load(request))  # fmt: skip
    data = []
    for index, vector in enumerate(result.vectors):
        value: Any = vector
        if body.encoding_format == "base64":
            value = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
        data.append({"object": "embedding", "index": index, "embedding": value})
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "model": _shown(request, body.model, model_id),
            "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
        }
    )


def _model_card(info: dict[str, Any], created: int) -> dict[str, Any]:
    """An OpenAI model object, plus whether it is loaded and what the appliance knows of it."""
    return {
        "id": info["id"],
        "object": "model",
        "created": created,
        "owned_by": "llm-appliance",
        "loaded": info["loaded"],
        "state": info["state"],
        "aliases": info["aliases"],
        "meta": {k: v for k, v in info.items() if k not in ("id", "state", "loaded", "plan", "aliases")},
    }


@router.get("/v1/models", **doc("openai", ok=ModelList))
async def list_models(request: Request) -> dict[str, Any]:
    created = request.app.state.started_at
    installed = await asyncio.to_thread(_manager(request).describe_installed)
    return {"object": "list", "data": [_model_card(info, created) for info in installed]}


@router.get("/v1/models/{model_id:path}", **doc("openai", ok=ModelCard, errors=(*PROTECTED, 404)))
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    manager = _manager(request)
    info = await asyncio.to_thread(manager.describe_model, manager.resolve(model_id), model_id)
    return _model_card(info, request.app.state.started_at)
