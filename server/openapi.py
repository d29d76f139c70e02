"""The published OpenAPI document (`GET /openapi.json`): each route's real request body and its answers,
built from the pydantic models the routes validate with (server/schemas.py, server/compat_schemas.py)
and the answer shapes (server/response_schemas.py).

The routes read their bodies themselves, as JSON whatever the Content-Type (curl -d sends a form type),
so FastAPI does not see them; each route's decorator takes ``**doc(...)`` instead, which puts the
body's schema and the answers, success and errors in the dialect's own shape, into the operation.
``install`` makes the app publish the result, with every schema under ``components/schemas``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from server.response_schemas import AnthropicError, Health, OllamaError, OpenAIError

Dialect = Literal["openai", "ollama", "anthropic"]
_REF = "#/components/schemas/{model}"
_ERROR_MODELS: dict[Dialect, type[BaseModel]] = {
    "openai": OpenAIError, "ollama": OllamaError, "anthropic": AnthropicError,
}  # fmt: skip
_STATUS_TEXT = {
    400: "Bad request: not JSON, or a field missing or invalid (the message names it), or a prompt "
         "longer than the model's context",
    401: "The API key is missing or wrong (when the daemon has keys)",
    403: "The request's Host or Origin is not allowed",
    404: "No such model",
    413: "The request body is over the configured limit",
    429: "Too many requests waiting or in flight; Retry-After says when to try again",
    500: "Generation failed inside the engine (the daemon keeps serving)",
    503: "The model is loading or could not be loaded, or no backend can take the request",
}  # fmt: skip
_MEDIA = {"sse": "text/event-stream", "ndjson": "application/x-ndjson"}
_BACKEND_HEADER = {
    "X-Appliance-Backend": {"description": "who answered: local, or remote:NAME", "required": True,
                            "schema": {"type": "string"}},
    "X-Appliance-Escalation-Reason": {"description": "why the request went to a remote",
                                      "schema": {"type": "string"}},
}  # fmt: skip
_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}

# With an OpenAPI 3.1 document, the schema of an event stream describes each event.
_SSE_EVENTS: dict[Dialect, dict[str, Any]] = {
    "openai": {"type": "object", "required": ["data"], "properties": {"data": {
        "type": "string", "description": "a chunk (or an error object) as JSON; the last event is [DONE]"}}},
    "anthropic": {"type": "object", "required": ["event", "data"], "properties": {
        "event": {"enum": ["message_start", "content_block_start", "content_block_delta",
                           "content_block_stop", "message_delta", "message_stop", "ping", "error"]},
        "data": {"type": "string", "description": "the event as JSON, its type repeated"}}},
}  # fmt: skip

PROTECTED = (401, 403, 429)
"""What any route but /health and / may answer: a key, Host or Origin refused; too many requests."""
BODY = (400, 413, *PROTECTED)
"""What a route that reads a body may answer besides."""
MODEL = (*BODY, 404, 503)
"""... and one that names a model."""
GENERATION = (*MODEL, 500)
"""... and one that generates."""


def schema(model: type[BaseModel], mode: Literal["validation", "serialization"]) -> dict[str, Any]:
    """``model``'s JSON Schema with its references pointing into ``components/schemas`` (its ``$defs``
    are moved there when the document is built)."""
    return model.model_json_schema(ref_template=_REF, mode=mode)


def _json(model: type[BaseModel] | None) -> dict[str, Any]:
    return {"schema": schema(model, "serialization") if model is not None else {}}


def doc(
    dialect: Dialect,
    *,
    body: type[BaseModel] | None = None,
    ok: type[BaseModel] | None = None,
    stream: Literal["sse", "ndjson"] | None = None,
    errors: Iterable[int] = PROTECTED,
    ok_media: str | None = "application/json",
    body_required: bool = True,
) -> dict[str, Any]:
    """Keyword arguments for a route's decorator: its request body (``body``, read as JSON), its answer
    (``ok``, of ``ok_media``, None for an empty one; with ``stream``, the media type of the streamed
    answer, each of whose NDJSON lines is an ``ok``), and its error statuses in the dialect's error shape."""
    success: dict[str, Any] = {"description": "Success", "headers": _BACKEND_HEADER, "content": {}}
    if ok_media == "application/json":
        success["content"][ok_media] = _json(ok)
    elif ok_media is not None:
        success["content"][ok_media] = {"schema": {"type": "string"}}
    if stream == "ndjson":
        success["content"][_MEDIA[stream]] = _json(ok)
    elif stream == "sse":
        success["content"][_MEDIA[stream]] = {"schema": _SSE_EVENTS[dialect]}
    if not success["content"]:
        del success["content"]
    responses: dict[int | str, dict[str, Any]] = {200: success}
    for status in sorted(set(errors)):
        headers = {**_BACKEND_HEADER, **(_RETRY_AFTER if status == 429 else {})}
        responses[status] = {"description": _STATUS_TEXT[status], "headers": headers,
                             "content": {"application/json": _json(_ERROR_MODELS[dialect])}}  # fmt: skip
    # The routes return plain dicts or responses: the answer is described here, not by FastAPI's model.
    out: dict[str, Any] = {"responses": responses, "response_model": None}
    if body is not None:
        out["openapi_extra"] = {"requestBody": {
            "required": body_required,
            "description": "JSON, whatever the Content-Type; unknown fields are accepted and logged",
            "content": {"application/json": {"schema": schema(body, "validation")}},
        }}  # fmt: skip
    return out


def health_doc() -> dict[str, Any]:
    """/health's answers: 200 when ready, 503 while loading or after a failed load, one shape."""
    answer = {"headers": _BACKEND_HEADER, "content": {"application/json": _json(Health)}}
    return {"responses": {200: {"description": "Ready", **answer},
                          503: {"description": "Loading, or the load failed", **answer}},
            "response_model": None}  # fmt: skip


def _hoist(node: Any, components: dict[str, Any]) -> None:
    """Move every ``$defs`` under ``node`` into ``components``; a name defined twice differently is a
    bug in the models (two classes of one name), found when the document is built."""
    if isinstance(node, dict):
        for name, definition in node.pop("$defs", {}).items():
            _hoist(definition, components)
            if components.setdefault(name, definition) != definition:
                raise ValueError(f"two different schemas are named {name}")
        for value in node.values():
            _hoist(value, components)
    elif isinstance(node, list):
        for value in node:
            _hoist(value, components)


def build(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document of ``app``."""
    document = get_openapi(title=app.title, version=app.version, routes=app.routes,
                           description=app.description)  # fmt: skip
    components = document.setdefault("components", {}).setdefault("schemas", {})
    for methods in document["paths"].values():
        for operation in methods.values():
            # FastAPI's 422 for bad path or query parameters: they are answered 400 (server/errors.py).
            operation["responses"].pop("422", None)
            # A top-level schema goes into the components too, under its title, and is referred to.
            for content in _contents(operation):
                top = content.get("schema", {})
                title = top.get("title")
                if "properties" in top and title:
                    _hoist(top, components)
                    if components.setdefault(title, top) != top:
                        raise ValueError(f"two different schemas are named {title}")
                    content["schema"] = {"$ref": _REF.format(model=title)}
    _hoist(document["paths"], components)
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return document


def _contents(operation: dict[str, Any]) -> list[dict[str, Any]]:
    out = list(operation.get("requestBody", {}).get("content", {}).values())
    for response in operation["responses"].values():
        out.extend(response.get("content", {}).values())
    return out


def install(app: FastAPI) -> None:
    """Make ``app`` publish ``build(app)`` at /openapi.json (built once, on the first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
