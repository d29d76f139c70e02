"""Ollama's API (`/api/*`), so Ollama clients work unchanged: tags, ps, show, version, chat, generate,
embed, pull and delete (a derived model's name only), streamed as NDJSON by default as Ollama does.
Errors are Ollama's `{"error": "..."}`.

It maps onto the same models and engine as the OpenAI routes. Ollama's request options map to the
sampler (`num_predict` is max tokens; `num_ctx` is the request's context: one slot's bounds it, more
reloads the model with larger slots when the planner says they fit). Chat, generate and embed go where
the router says (server.generation), to this machine or to a remote, as every dialect does.
/api/create and /api/copy are in server.ollama_create_routes.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any, cast

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from appliance import __version__, model_defaults
from appliance.backend import (
    ChatParams,
    CompletionParams,
    Effort,
    Embeddings,
    Event,
    Finished,
    Infill,
    Reasoning,
    SamplingParams,
    TextDelta,
    ToolCallDelta,
)
from appliance.capabilities import described_capabilities
from appliance.config import PerModelSettings
from appliance.errors import ApplianceError, InvalidRequest, ModelNotFound
from appliance.manager import ModelManager
from models.catalog import LocalModel
from server import generation
from server.compat_schemas import (
    OllamaChatRequest,
    OllamaEmbeddingsRequest,
    OllamaEmbedRequest,
    OllamaGenerateRequest,
    OllamaMessage,
    OllamaModelRequest,
    OllamaOptions,
    OllamaPullRequest,
)
from server.errors import clip, dialect_error_body
from server.ollama_create_routes import show as derived_show
from server.ollama_create_routes import tag as derived_tag
from server.openapi import BODY, GENERATION, doc
from server.pull_routes import failed_kind, remove_stored, start_pull
from server.response_schemas import (
    OllamaChatAnswer,
    OllamaEmbedAnswer,
    OllamaEmbeddingsAnswer,
    OllamaGenerateAnswer,
    OllamaPs,
    OllamaPullStatus,
    OllamaShow,
    OllamaTags,
    OllamaVersion,
)
from server.schemas import Tool, read_body

router = APIRouter(prefix="/api")

_SAMPLING_OPTIONS = {
    "temperature": "temperature", "top_k": "top_k", "top_p": "top_p", "min_p": "min_p",
    "repeat_penalty": "repeat_penalty", "repeat_last_n": "repeat_last_n", "seed": "seed",
    "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty",
}  # fmt: skip


def _manager(request: Request) -> ModelManager:
    manager: ModelManager = request.app.state.manager
    return manager


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat().replace("+00:00", "Z")


def _resolve(manager: ModelManager, name: str) -> LocalModel:
    try:
        return manager.resolve(name)
    except ApplianceError:
        raise ModelNotFound(f"model '{name}' not found") from None


def _details(manager: ModelManager, model: LocalModel) -> dict[str, Any]:
    info = manager.plan_for(model).model
    params = info.n_params
    size = f"{params / 1e9:.1f}B" if params >= 1e9 else f"{params / 1e6:.0f}M"
    return {"parent_model": "", "format": "gguf", "family": info.architecture,
            "families": [info.architecture], "parameter_size": size,
            "quantization_level": info.quant}  # fmt: skip


def _entry(manager: ModelManager, model: LocalModel) -> dict[str, Any]:
    stat = model.path.stat()
    entry = {"name": model.id, "model": model.id, "modified_at": _iso(stat.st_mtime), "size": stat.st_size,
             "details": _details(manager, model)}  # fmt: skip
    if model.sha256:
        entry["digest"] = model.sha256
    return entry


def _options(
    options: OllamaOptions | None, defaults: PerModelSettings
) -> tuple[SamplingParams, int | None, tuple[str, ...], int | None]:
    options = options or OllamaOptions()
    sampling = model_defaults.sampling(
        {f: getattr(options, key) for key, f in _SAMPLING_OPTIONS.items()}, defaults
    )
    predict = options.num_predict
    max_tokens = None if predict is None or predict < 0 else predict
    stop = options.stop or ()
    return sampling, max_tokens, (stop,) if isinstance(stop, str) else tuple(stop), options.num_ctx


def _tools(tools: list[Tool] | None) -> list[dict[str, Any]]:
    return [tool.model_dump(exclude_none=True) for tool in tools or []]


def _format(fmt: str | dict[str, Any] | None) -> dict[str, Any] | None:
    if not fmt:
        return None
    return fmt if isinstance(fmt, dict) else {"type": "object"}  # "json"


def _think(think: bool | str | None) -> Reasoning:
    """Ollama's ``think``: true or false, or how hard ("low", "medium", "high", as gpt-oss takes it)."""
    if think is None:
        return Reasoning()
    if isinstance(think, bool):
        return Reasoning(enabled=think)
    return Reasoning(enabled=True, effort=cast(Effort, think))


def _content(text: str | None, images: list[str] | None) -> str | list[dict[str, Any]]:
    """A message's content on the seam: its text, and its images (Ollama sends them base64-encoded, of
    any format) as data-URL image parts."""
    if not images:
        return text or ""
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    # The format is not said; image readers sniff it from the bytes, whatever the URL's type says.
    parts += [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}} for image in images
    ]
    return parts


def _messages(messages: list[OllamaMessage]) -> list[dict[str, Any]]:
    out = []
    for index, message in enumerate(messages):
        item: dict[str, Any] = {"role": message.role, "content": _content(message.content, message.images)}
        if message.tool_calls:
            item["tool_calls"] = [
                {"id": f"call_{index}_{i}", "type": "function",
                 "function": {"name": c.function.name, "arguments": json.dumps(c.function.arguments or {})}}
                for i, c in enumerate(message.tool_calls)
            ]  # fmt: skip
        if message.tool_name:
            item["name"] = message.tool_name
        if message.thinking and message.role == "assistant":  # a previous turn's thinking
            item["reasoning_content"] = message.thinking
        out.append(item)
    return out


def _timings(started: int, first: int | None, done: int, finished: Finished | None) -> dict[str, Any]:
    """Ollama's counts and durations (ns). A reply whose output all came with its end (calls a backend
    gives only whole) counts its whole time as generation: prompt and generation cannot be told apart
    then, and clients divide eval_count by eval_duration."""
    usage = finished.usage if finished is not None else None
    first = first or started
    return {
        # Ollama says "stop" for a reply with tool calls too; clients look for message.tool_calls.
        "done_reason": "length" if finished is not None and finished.finish_reason == "length" else "stop",
        "total_duration": done - started, "load_duration": 0,
        "prompt_eval_count": usage.prompt_tokens if usage else 0, "prompt_eval_duration": first - started,
        "eval_count": usage.completion_tokens if usage else 0, "eval_duration": done - first,
    }  # fmt: skip


def _tool_call(index: int, name: str, arguments: str) -> dict[str, Any]:
    """A call as Ollama writes it: arguments as an object (not JSON text), its place in ``index``."""
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError:
        parsed = None
    parsed = parsed if isinstance(parsed, dict) else {}
    return {"function": {"index": index, "name": name, "arguments": parsed}}


def _tool_calls(finished: Finished | None) -> list[dict[str, Any]]:
    calls = finished.tool_calls if finished is not None else ()
    return [_tool_call(index, call.name, call.arguments) for index, call in enumerate(calls)]


async def _answer(
    events: AsyncIterator[Event], cancel: Any, model: str, stream: bool, chat: bool, started: int
) -> Response:
    """The NDJSON stream (or one object) of a chat or generate request. Streamed, a tool call goes out
    whole in its own line (``message.tool_calls``, done false) once it is complete, as Ollama does: when
    the next call begins, or at the end."""

    def piece(text: str, thinking: str = "") -> dict[str, Any]:
        """A line of the answer; the model's thinking, when it has some, in Ollama's ``thinking``."""
        thought = {"thinking": thinking} if thinking else {}
        if chat:
            message = {"role": "assistant", "content": text, **thought}
            return {"model": model, "created_at": _now(), "message": message, "done": False}
        return {"model": model, "created_at": _now(), "response": text, **thought, "done": False}

    def last(text: str, first: int | None, finished: Finished | None, thinking: str = "") -> dict[str, Any]:
        timings = _timings(started, first, time.monotonic_ns(), finished)
        return {**piece(text, thinking), "done": True, **timings}

    def calls_line(calls: list[dict[str, Any]]) -> bytes:
        line = piece("")
        line["message"]["tool_calls"] = calls
        return json.dumps(line).encode() + b"\n"

    if not stream:
        parts: list[str] = []
        thoughts: list[str] = []
        first: int | None = None
        finished: Finished | None = None
        async for event in events:
            if isinstance(event, TextDelta | ToolCallDelta):
                first = first or time.monotonic_ns()
            if isinstance(event, TextDelta):
                parts.append(event.text)
                thoughts.append(event.reasoning)
            elif isinstance(event, Finished):
                finished = event
        answer = last("".join(parts), first, finished, "".join(thoughts))
        if chat and (calls := _tool_calls(finished)):
            answer["message"]["tool_calls"] = calls
        return JSONResponse(answer)

    async def lines() -> AsyncIterator[bytes]:
        first: int | None = None
        finished: Finished | None = None
        writing: dict[int, list[str]] = {}  # the streamed call being written: index -> [name, arguments]
        sent: set[int] = set()
        try:
            async for event in events:
                if isinstance(event, TextDelta) and (event.text or event.reasoning):
                    first = first or time.monotonic_ns()
                    yield json.dumps(piece(event.text, event.reasoning)).encode() + b"\n"
                elif isinstance(event, ToolCallDelta) and chat:
                    first = first or time.monotonic_ns()
                    if event.index not in writing and event.index not in sent:
                        for index, (name, arguments) in writing.items():  # the call before is complete
                            yield calls_line([_tool_call(index, name, arguments)])
                        sent.update(writing)
                        writing = {event.index: [event.name, ""]}
                    if event.index in writing:
                        writing[event.index][1] += event.arguments
                elif isinstance(event, Finished):
                    finished = event
        except ApplianceError as exc:  # mid-stream (a remote lost, the engine failing): Ollama's error line
            yield json.dumps(dialect_error_body("/api/chat", exc.status, exc)).encode() + b"\n"
            return
        finally:
            cancel()
        for index, (name, arguments) in writing.items():
            yield calls_line([_tool_call(index, name, arguments)])
        sent.update(writing)
        if chat:  # calls that came only whole, with the end
            for call in _tool_calls(finished):
                if call["function"]["index"] not in sent:
                    yield calls_line([call])
        yield json.dumps(last("", first, finished)).encode() + b"\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.get("/version", **doc("ollama", ok=OllamaVersion))
async def version() -> dict[str, str]:
    return {"version": __version__}


@router.get("/tags", **doc("ollama", ok=OllamaTags))
async def tags(request: Request) -> dict[str, Any]:
    manager = _manager(request)
    models = []
    entries: dict[str, dict[str, Any]] = {}
    for model in manager.models:
        try:
            entries[model.id] = _entry(manager, model)
        except (OSError, ValueError):
            continue  # a file gone or unreadable since the scan: not listed
        models.append(entries[model.id])
    models += [derived_tag(d, entries[d.base]) for d in manager.derived if d.base in entries]
    return {"models": models}


@router.get("/ps", **doc("ollama", ok=OllamaPs))
async def ps(request: Request) -> dict[str, Any]:
    manager = _manager(request)
    now = time.monotonic()
    out = []
    for entry in manager.loaded():
        if entry.state != "ready":
            continue
        memory = entry.plan.memory
        expires = (
            _iso(time.time() + max(0.0, entry.keep_alive_s - entry.idle_seconds(now)))
            if entry.keep_alive_s is not None
            else "9999-12-31T23:59:59Z"  # stays until its memory is needed (as Ollama says "forever")
        )
        item = {**_entry(manager, entry.model), "size": memory.ram_bytes + memory.vram_bytes,
                "size_vram": memory.vram_bytes, "expires_at": expires,
                # what one request gets: one slot's share of the KV cache
                "context_length": entry.plan.settings.n_ctx // entry.plan.settings.n_parallel}  # fmt: skip
        out.append(item)
    return {"models": out}


@router.post("/show", **doc("ollama", body=OllamaModelRequest, ok=OllamaShow, errors=(*BODY, 404)))
async def show(request: Request) -> Response:
    manager = _manager(request)
    name = (await read_body(request, OllamaModelRequest)).model_name
    model = _resolve(manager, name)
    info = manager.plan_for(model).model
    arch = info.architecture
    described = described_capabilities(model.path, manager.settings.dirs.data, manager.template_file(model))
    model_info = {
        "general.architecture": arch, "general.name": info.name, "general.parameter_count": info.n_params,
        "general.file_type": info.quant, f"{arch}.context_length": info.n_ctx_train,
        f"{arch}.embedding_length": info.n_embd, f"{arch}.block_count": info.n_layer,
        f"{arch}.feed_forward_length": info.n_ff,
        f"{arch}.attention.head_count": max(info.n_head, default=0),
        f"{arch}.attention.head_count_kv": max(info.n_head_kv, default=0),
        f"{arch}.vocab_size": info.n_vocab,
    }  # fmt: skip
    shown = {
        "modelfile": f"FROM {model.path}\n", "parameters": "", "template": "", "license": "",
        "details": _details(manager, model), "model_info": model_info,
        "capabilities": described["capabilities"],
        # Ours, beside model_info: how the capabilities come about, and what `appliance eval` measured.
        "appliance": {"declared": described["declared"], "measured": described["measured"]},
        "modified_at": _iso(model.path.stat().st_mtime),
    }  # fmt: skip
    derived = None if name in (m.id for m in manager.models) else manager.derived.get(name)
    return JSONResponse(derived_show(derived, shown) if derived is not None else shown)


@router.post(
    "/chat",
    **doc("ollama", body=OllamaChatRequest, ok=OllamaChatAnswer, stream="ndjson", errors=GENERATION),
)
async def chat(request: Request) -> Response:
    body = await read_body(request, OllamaChatRequest)
    sampling, max_tokens, stop, n_ctx = _options(
        body.options, _manager(request).settings_for(body.model_name)
    )
    params = ChatParams(messages=_messages(body.messages or []), sampling=sampling,
                        max_tokens=max_tokens, stop=stop, json_schema=_format(body.format),
                        tools=_tools(body.tools), reasoning=_think(body.think),
                        context_tokens=n_ctx)  # fmt: skip
    return await _run(request, body, params, chat=True)


@router.post(
    "/generate",
    **doc("ollama", body=OllamaGenerateRequest, ok=OllamaGenerateAnswer, stream="ndjson", errors=GENERATION),
)
async def generate(request: Request) -> Response:
    body = await read_body(request, OllamaGenerateRequest)
    name = body.model_name
    if body.images and (body.raw or body.suffix):
        raise InvalidRequest("images need a chat template: raw prompts and suffix take text only")
    if body.system and body.suffix:  # Ollama's templates drop it without a word; said here
        raise InvalidRequest("system cannot be combined with suffix: fill-in-the-middle has no chat template")
    if not body.prompt and not body.suffix:  # Ollama's way to load a model: answer once it is ready
        manager = _manager(request)
        _resolve(manager, name)
        async with manager.use(name):
            pass
        return JSONResponse({"model": name, "created_at": _now(), "response": "", "done": True,
                             "done_reason": "load"})  # fmt: skip
    sampling, max_tokens, stop, n_ctx = _options(
        body.options, _manager(request).settings_for(body.model_name)
    )
    params: ChatParams | CompletionParams
    if body.suffix:  # fill-in-the-middle, framed by the model's FIM tokens (no chat template), raw or not
        infill = Infill(prefix=body.prompt or "", suffix=body.suffix)
        params = CompletionParams(prompt=infill.prefix, sampling=sampling, max_tokens=max_tokens, stop=stop,
                                  json_schema=_format(body.format), context_tokens=n_ctx,
                                  infill=infill)  # fmt: skip
    elif body.raw:  # the prompt is not empty: see above
        params = CompletionParams(prompt=body.prompt or "", sampling=sampling, max_tokens=max_tokens,
                                  stop=stop, json_schema=_format(body.format),
                                  context_tokens=n_ctx)  # fmt: skip
    else:
        system = [{"role": "system", "content": body.system}] if body.system else []
        user = {"role": "user", "content": _content(body.prompt, body.images)}
        params = ChatParams(messages=[*system, user],
                            sampling=sampling, max_tokens=max_tokens, stop=stop,
                            json_schema=_format(body.format), reasoning=_think(body.think),
                            context_tokens=n_ctx)  # fmt: skip
    return await _run(request, body, params, chat=False)


async def _run(
    request: Request,
    body: OllamaChatRequest | OllamaGenerateRequest,
    params: ChatParams | CompletionParams,
    chat: bool,
) -> Response:
    started = time.monotonic_ns()
    name = body.model_name
    endpoint = "/api/chat" if chat else "/api/generate"
    run = await generation.generate(request, endpoint, name, params,
                                    check_local=lambda: _resolve(_manager(request), name))  # fmt: skip
    return await _answer(run.events, run.cancel, name, body.streams, chat, started)


def _pull_ref(name: str) -> str:
    """Ollama's model names as the appliance pulls them: `hf.co/owner/repo[:quant]` from Hugging Face,
    anything else from Ollama's registry."""
    for prefix in ("hf.co/", "huggingface.co/"):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name if name.startswith("ollama:") else f"ollama:{name}"


def _progress(data: dict[str, Any]) -> dict[str, Any]:
    """One of the appliance's pull events as Ollama's progress line."""
    status = data.get("status")
    if status == "downloading":
        return {"status": f"pulling {data.get('file', '')}", "digest": data.get("file", ""),
                "total": data.get("total"), "completed": data.get("completed")}  # fmt: skip
    if status == "error":
        return {"error": data.get("error", "the pull failed")}
    if status == "success":
        return {"status": "success"}
    return {"status": data.get("message") or status}


@router.post(
    "/pull",
    **doc("ollama", body=OllamaPullRequest, ok=OllamaPullStatus, stream="ndjson", errors=(*BODY, 404)),
)
async def pull(request: Request) -> Response:
    """Pull into the store, with Ollama's progress lines; the pull runs on the daemon (it goes on if the
    client leaves), as `/appliance/v1/models/pull`'s does."""
    body = await read_body(request, OllamaPullRequest)
    job = start_pull(request, _pull_ref(body.model_name))
    if body.stream is not False:

        async def lines() -> AsyncIterator[bytes]:
            async for data in job.follow():
                yield json.dumps(_progress(data)).encode() + b"\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")
    last: dict[str, Any] = {}
    async for data in job.follow():
        last = data
    answer, kind = (_progress(last) if last else {}), failed_kind(last)
    if kind is not None:  # as /appliance/v1/models/pull answers a failed pull: the pull's own message
        answer["error"] = clip(answer["error"])
        return JSONResponse(answer, status_code=404 if kind == "not_found" else 400)
    return JSONResponse(answer)


@router.delete(
    "/delete",
    response_class=Response,
    **doc("ollama", body=OllamaModelRequest, ok_media=None, errors=(*BODY, 404)),
)
async def delete(request: Request) -> Response:
    name = (await read_body(request, OllamaModelRequest)).model_name
    if _manager(request).remove_derived(name):  # its name and settings only, never its base's file
        return Response(status_code=200)
    try:
        await remove_stored(_manager(request), name)
    except ModelNotFound:
        raise ModelNotFound(f"model '{name}' not found") from None
    return Response(status_code=200)


async def _embed(request: Request, name: str, inputs: list[str], endpoint: str) -> tuple[Embeddings, int]:
    started = time.monotonic_ns()
    result, _ = await generation.embed(request, endpoint, name, inputs,
                                       check_local=lambda: _resolve(_manager(request), name))  # fmt: skip
    return result, time.monotonic_ns() - started


@router.post("/embed", **doc("ollama", body=OllamaEmbedRequest, ok=OllamaEmbedAnswer, errors=GENERATION))
async def embed(request: Request) -> Response:
    body = await read_body(request, OllamaEmbedRequest)
    name = body.model_name
    inputs = [body.input] if isinstance(body.input, str) else body.input
    result, took = await _embed(request, name, inputs, "/api/embed")
    return JSONResponse({"model": name, "embeddings": result.vectors, "total_duration": took,
                         "load_duration": 0, "prompt_eval_count": result.prompt_tokens})  # fmt: skip


@router.post(
    "/embeddings",
    **doc("ollama", body=OllamaEmbeddingsRequest, ok=OllamaEmbeddingsAnswer, errors=GENERATION),
)
async def embeddings(request: Request) -> Response:
    """Ollama's older embedding endpoint (one ``prompt``, one ``embedding``), still used by clients such
    as LangChain's OllamaEmbeddings before 0.3. The vector is normalised, as /api/embed's are."""
    body = await read_body(request, OllamaEmbeddingsRequest)
    result, _ = await _embed(request, body.model_name, [body.prompt], "/api/embeddings")
    return JSONResponse({"embedding": result.vectors[0]})
