"""Ollama's API (`/api/*`), so Ollama clients work unchanged: tags, ps, show, version, chat, generate,
embed, pull and delete (a derived model's name only), streamed as NDJSON by default as Ollama does.
Errors are Ollama's `{"error": "..."}`.

It maps onto the same models and engine as the OpenAI routes; server.ollama_params translates the
request fields (options, think, keep_alive, ...), and names any it cannot honour. Chat, generate and
embed go where the router says (server.generation), to this machine or to a remote, as every dialect
does. /api/create and /api/copy are in server.ollama_create_routes, /api/show's answer in
server.ollama_show.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from appliance import __version__
from appliance.backend import (
    ChatParams,
    CompletionParams,
    Embeddings,
    Event,
    Finished,
    Infill,
    TextDelta,
    TokenLogprob,
    ToolCallDelta,
)
from appliance.errors import ApplianceError, InvalidRequest, ModelNotFound
from appliance.manager import ModelManager
from models.catalog import LocalModel
from server import generation
from server import ollama_params as params_of
from server.compat_schemas import (
    OllamaChatRequest,
    OllamaEmbeddingsRequest,
    OllamaEmbedRequest,
    OllamaGenerateRequest,
    OllamaModelRequest,
    OllamaPullRequest,
)
from server.errors import clip, dialect_error_body
from server.ollama_create_routes import show as derived_show
from server.ollama_create_routes import tag as derived_tag
from server.ollama_show import details, iso
from server.ollama_show import show as show_body
from server.openai_payloads import chat_logprob
from server.openapi import BODY, GENERATION, doc
from server.pull_routes import failed_kind, remove_stored, start_pull
from server.record import record_of
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
from server.schemas import read_body

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api")


def _manager(request: Request) -> ModelManager:
    manager: ModelManager = request.app.state.manager
    return manager


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _resolve(manager: ModelManager, name: str) -> LocalModel:
    try:
        return manager.resolve(name)
    except ApplianceError:
        raise ModelNotFound(f"model '{name}' not found") from None


def _entry(manager: ModelManager, model: LocalModel) -> dict[str, Any]:
    stat = model.path.stat()
    entry = {"name": model.id, "model": model.id, "modified_at": iso(stat.st_mtime), "size": stat.st_size,
             "details": details(manager, model)}  # fmt: skip
    if model.sha256:
        entry["digest"] = model.sha256
    return entry


def _timings(
    started: int, first: int | None, done: int, finished: Finished | None, load_ns: int = 0
) -> dict[str, Any]:
    """Ollama's counts and durations (ns): the whole request's, the model's load (or the wait for it)
    within it, the prompt's after that, the generation's. A reply whose output all came with its end
    (calls a backend gives only whole) counts its whole time as generation: prompt and generation cannot
    be told apart then, and clients divide eval_count by eval_duration."""
    usage = finished.usage if finished is not None else None
    first = first or started + load_ns
    return {
        # Ollama says "stop" for a reply with tool calls too; clients look for message.tool_calls.
        "done_reason": "length" if finished is not None and finished.finish_reason == "length" else "stop",
        "total_duration": done - started, "load_duration": load_ns,
        "prompt_eval_count": usage.prompt_tokens if usage else 0,
        "prompt_eval_duration": max(first - started - load_ns, 0),
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
    events: AsyncIterator[Event],
    cancel: Any,
    model: str,
    stream: bool,
    chat: bool,
    started: int,
    *,
    load_ns: int = 0,
    logprobs: bool = False,
) -> Response:
    """The NDJSON stream (or one object) of a chat or generate request. Streamed, a tool call goes out
    whole in its own line (``message.tool_calls``, done false) once it is complete, as Ollama does: when
    the next call begins, or at the end. ``load_ns``: how long the model took to be ready (Ollama's
    load_duration); ``logprobs``: each line carries its tokens' log-probabilities."""

    def piece(text: str, thinking: str = "", lps: tuple[TokenLogprob, ...] = ()) -> dict[str, Any]:
        """A line of the answer; the model's thinking, when it has some, in Ollama's ``thinking``."""
        thought = {"thinking": thinking} if thinking else {}
        scored = {"logprobs": [chat_logprob(lp) for lp in lps]} if logprobs and lps else {}
        if chat:
            message = {"role": "assistant", "content": text, **thought}
            return {"model": model, "created_at": _now(), "message": message, **scored, "done": False}
        return {"model": model, "created_at": _now(), "response": text, **thought, **scored, "done": False}

    def last(
        text: str,
        first: int | None,
        finished: Finished | None,
        thinking: str = "",
        lps: tuple[TokenLogprob, ...] = (),
    ) -> dict[str, Any]:
        timings = _timings(started, first, time.monotonic_ns(), finished, load_ns)
        return {**piece(text, thinking, lps), "done": True, **timings}

    def calls_line(calls: list[dict[str, Any]]) -> bytes:
        line = piece("")
        line["message"]["tool_calls"] = calls
        return json.dumps(line).encode() + b"\n"

    if not stream:
        parts: list[str] = []
        thoughts: list[str] = []
        token_lps: list[TokenLogprob] = []
        first: int | None = None
        finished: Finished | None = None
        async for event in events:
            if isinstance(event, TextDelta | ToolCallDelta):
                first = first or time.monotonic_ns()
            if isinstance(event, TextDelta):
                parts.append(event.text)
                thoughts.append(event.reasoning)
                token_lps.extend(event.logprobs)
            elif isinstance(event, Finished):
                finished = event
        answer = last("".join(parts), first, finished, "".join(thoughts), tuple(token_lps))
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
                    yield json.dumps(piece(event.text, event.reasoning, event.logprobs)).encode() + b"\n"
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
    """The loaded models; ``expires_at``: when each unloads if no request comes (its keep-alive counted
    from its last request's end, or from now while one runs; 9999-12-31 for one kept until its memory
    is needed, as Ollama shows a negative keep_alive)."""
    manager = _manager(request)
    now = time.monotonic()
    out = []
    for entry in manager.loaded():
        if entry.state != "ready":
            continue
        memory = entry.plan.memory
        keep = entry.keep_alive_s
        left_s = None if keep is None else keep - (entry.idle_seconds(now) if entry.idle else 0.0)
        expires = "9999-12-31T23:59:59Z" if left_s is None else iso(time.time() + max(0.0, left_s))
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
    shown = show_body(manager, model)
    derived = None if name in (m.id for m in manager.models) else manager.derived.get(name)
    return JSONResponse(derived_show(derived, shown) if derived is not None else shown)


async def _preload(request: Request, name: str, keep_alive_s: float | None, chat: bool) -> Response:
    """Ollama's way to load a model (an empty prompt or no messages): answer ``done_reason: "load"`` once
    it is ready; with ``keep_alive: 0``, unload it (once its running requests are done) and answer
    ``"unload"``."""
    manager = _manager(request)
    _resolve(manager, name)
    if keep_alive_s == 0:
        await manager.unload(name)
        reason = "unload"
    else:
        async with manager.use(name, keep_alive_s=keep_alive_s):
            pass
        reason = "load"
    empty: dict[str, Any] = {"message": {"role": "assistant", "content": ""}} if chat else {"response": ""}
    return JSONResponse({"model": name, "created_at": _now(), **empty, "done": True, "done_reason": reason})


@router.post(
    "/chat",
    **doc("ollama", body=OllamaChatRequest, ok=OllamaChatAnswer, stream="ndjson", errors=GENERATION),
)
async def chat(request: Request) -> Response:
    body = await read_body(request, OllamaChatRequest)
    keep_alive_s = params_of.keep_alive(body.keep_alive)
    if not body.messages:
        return await _preload(request, body.model_name, keep_alive_s, chat=True)
    sampling, max_tokens, stop, n_ctx = params_of.options(
        body.options, _manager(request).settings_for(body.model_name), "/api/chat"
    )
    params = ChatParams(messages=params_of.messages(body.messages), sampling=sampling,
                        max_tokens=max_tokens, stop=stop, json_schema=params_of.json_format(body.format),
                        tools=params_of.tools(body.tools), reasoning=params_of.think(body.think),
                        top_logprobs=params_of.top_logprobs(body.logprobs, body.top_logprobs),
                        context_tokens=n_ctx)  # fmt: skip
    return await _run(request, body, params, keep_alive_s, chat=True)


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
    params_of.refuse_unhonoured({**(body.model_extra or {}), "template": body.template,
                                 "context": body.context}, "/api/generate")  # fmt: skip
    keep_alive_s = params_of.keep_alive(body.keep_alive)
    if not body.prompt and not body.suffix:  # Ollama's way to load a model (a suffix alone is a fill-in)
        return await _preload(request, name, keep_alive_s, chat=False)
    sampling, max_tokens, stop, n_ctx = params_of.options(
        body.options, _manager(request).settings_for(body.model_name), "/api/generate"
    )
    top = params_of.top_logprobs(body.logprobs, body.top_logprobs)
    params: ChatParams | CompletionParams
    if body.suffix:  # fill-in-the-middle, framed by the model's FIM tokens (no chat template), raw or not
        infill = Infill(prefix=body.prompt or "", suffix=body.suffix)
        params = CompletionParams(prompt=infill.prefix, sampling=sampling, max_tokens=max_tokens, stop=stop,
                                  top_logprobs=top, json_schema=params_of.json_format(body.format),
                                  context_tokens=n_ctx, infill=infill)  # fmt: skip
    elif body.raw:  # the prompt is not empty: see above
        params = CompletionParams(prompt=body.prompt or "", sampling=sampling, max_tokens=max_tokens,
                                  stop=stop, top_logprobs=top, json_schema=params_of.json_format(body.format),
                                  context_tokens=n_ctx)  # fmt: skip
    else:
        system = [{"role": "system", "content": body.system}] if body.system else []
        user = {"role": "user", "content": params_of.content(body.prompt, body.images)}
        params = ChatParams(messages=[*system, user],
                            sampling=sampling, max_tokens=max_tokens, stop=stop, top_logprobs=top,
                            json_schema=params_of.json_format(body.format),
                            reasoning=params_of.think(body.think), context_tokens=n_ctx)  # fmt: skip
    return await _run(request, body, params, keep_alive_s, chat=False)


async def _run(
    request: Request,
    body: OllamaChatRequest | OllamaGenerateRequest,
    params: ChatParams | CompletionParams,
    keep_alive_s: float | None,
    chat: bool,
) -> Response:
    started = time.monotonic_ns()
    name = body.model_name
    endpoint = "/api/chat" if chat else "/api/generate"

    def check_local() -> None:  # served here: the model must be installed, and think what it can
        _resolve(_manager(request), name)
        params_of.check_think(_manager(request), name, body.think)

    run = await generation.generate(request, endpoint, name, params, check_local=check_local,
                                    keep_alive_s=keep_alive_s)  # fmt: skip
    load_ns = round(record_of(request.scope).load_s * 1e9)
    return await _answer(run.events, run.cancel, name, body.streams, chat, started, load_ns=load_ns,
                         logprobs=params.top_logprobs is not None)  # fmt: skip


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


async def _embed(
    request: Request, name: str, inputs: list[str], endpoint: str, keep_alive_s: float | None = None
) -> tuple[Embeddings, int]:
    started = time.monotonic_ns()
    result, _ = await generation.embed(request, endpoint, name, inputs, keep_alive_s=keep_alive_s,
                                       check_local=lambda: _resolve(_manager(request), name))  # fmt: skip
    return result, time.monotonic_ns() - started


def _shortened(vectors: list[list[float]], dimensions: int | None) -> list[list[float]]:
    """Ollama's ``dimensions``: each vector cut to its first ``dimensions`` values, normalised again."""
    if dimensions is None:
        return vectors
    if vectors and dimensions > len(vectors[0]):
        raise InvalidRequest(f"dimensions {dimensions} is more than the model's {len(vectors[0])}",
                             param="dimensions")  # fmt: skip
    out = []
    for vector in vectors:
        cut = vector[:dimensions]
        norm = math.sqrt(sum(x * x for x in cut)) or 1.0
        out.append([x / norm for x in cut])
    return out


@router.post("/embed", **doc("ollama", body=OllamaEmbedRequest, ok=OllamaEmbedAnswer, errors=GENERATION))
async def embed(request: Request) -> Response:
    body = await read_body(request, OllamaEmbedRequest)
    name = body.model_name
    inputs = [body.input] if isinstance(body.input, str) else body.input
    if body.truncate:  # Ollama's default; here an input longer than the context is refused, never cut
        log.warning("/api/embed: truncate is not done here: an input longer than the context is a 400")
    if body.options is not None:
        params_of.options(body.options, _manager(request).settings_for(name), "/api/embed")  # names extras
    keep_alive_s = params_of.keep_alive(body.keep_alive)
    result, took = await _embed(request, name, inputs, "/api/embed", keep_alive_s)
    load_ns = round(record_of(request.scope).load_s * 1e9)
    return JSONResponse({"model": name, "embeddings": _shortened(result.vectors, body.dimensions),
                         "total_duration": took, "load_duration": load_ns,
                         "prompt_eval_count": result.prompt_tokens})  # fmt: skip


@router.post(
    "/embeddings",
    **doc("ollama", body=OllamaEmbeddingsRequest, ok=OllamaEmbeddingsAnswer, errors=GENERATION),
)
async def embeddings(request: Request) -> Response:
    """Ollama's older embedding endpoint (one ``prompt``, one ``embedding``), still used by clients such
    as LangChain's OllamaEmbeddings before 0.3. The vector is normalised, as /api/embed's are."""
    body = await read_body(request, OllamaEmbeddingsRequest)
    keep_alive_s = params_of.keep_alive(body.keep_alive)
    result, _ = await _embed(request, body.model_name, [body.prompt], "/api/embeddings", keep_alive_s)
    return JSONResponse({"embedding": result.vectors[0]})
