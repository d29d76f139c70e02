"""Ollama's /api/create and /api/copy: derived models, a new name over an installed model's file with
settings of its own (appliance.derived), and how /api/show and /api/tags describe them. Errors are
Ollama's `{"error": "..."}` (server/errors.py), 404 for a source that does not exist."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from appliance import modelfile
from appliance.derived import SUPPORTED, DerivedModel
from appliance.errors import InvalidRequest
from appliance.manager import ModelManager
from server.compat_schemas import OllamaCopyRequest, OllamaCreateRequest
from server.ollama_show import settings_fields
from server.openapi import BODY, doc
from server.response_schemas import OllamaPullStatus
from server.schemas import read_body

router = APIRouter(prefix="/api")

# What Ollama's create takes that a derived model cannot carry out: each refused by name, never ignored.
_REFUSED = {
    "quantize": "quantizing makes a new file; a derived model shares its base's (pull the quantization "
                "you want instead)",
    "files": "models are made from installed ones here (`appliance import FILE.gguf` first)",
    "adapters": "LoRA adapters are not served",
    "adapter": "LoRA adapters are not served",
    "draft": "a derived model cannot carry a draft model; give its base one (`draft_model` in "
             "config.toml's `[models.\"ID\"]`)",
    "renderer": "the model's own chat template renders its prompts",
    "parser": "the model family's own reader parses its replies",
    "path": "send the Modelfile's text in `modelfile`",
}  # fmt: skip
_KNOWN = ("from", "system", "template", "parameters", "messages", "license")


def _manager(request: Request) -> ModelManager:
    manager: ModelManager = request.app.state.manager
    return manager


def _fields(body: OllamaCreateRequest) -> dict[str, Any]:
    """The create request as JSON fields: the Modelfile's lines, under the request's own fields."""
    fields = modelfile.parse(body.modelfile).request() if body.modelfile else {}
    given = body.model_dump(
        by_alias=True, exclude_none=True, exclude={"model", "name", "modelfile", "stream"}
    )
    fields.update({k: v for k, v in given.items() if k in _REFUSED or k in _KNOWN})
    fields.pop("requires", None)  # a minimum Ollama version: nothing to check here
    refused = sorted(k for k in fields if k in _REFUSED)
    if refused:
        raise InvalidRequest(
            "; ".join(f"{k} is not supported: {_REFUSED[k]}" for k in refused) + f" (supported: {SUPPORTED})",
            param=refused[0],
        )
    if fields.get("template"):
        raise InvalidRequest(
            "TEMPLATE is Go template syntax, which is not run here: each model's prompts are rendered by the "
            f"Jinja chat template in its GGUF; leave TEMPLATE out (supported: {SUPPORTED})",
            param="template",
        )
    if not fields.get("from"):
        raise InvalidRequest("from is required: the model to make it from (or a FROM line)", param="from")
    return fields


def _derive(manager: ModelManager, name: str, fields: dict[str, Any]) -> DerivedModel:
    license_texts = fields.get("license")
    return manager.derive(
        name,
        fields["from"],
        system=fields.get("system"),
        parameters=fields.get("parameters"),
        messages=fields.get("messages"),
        license_texts=[license_texts] if isinstance(license_texts, str) else license_texts,
    )


@router.post("/create", **doc("ollama", body=OllamaCreateRequest, ok=OllamaPullStatus, stream="ndjson",
                                 errors=(*BODY, 404)))  # fmt: skip
async def create(request: Request) -> Response:
    """A derived model: made (and kept) before the answer, so a bad request is a plain error status;
    then Ollama's status lines, or the last of them with ``stream: false``."""
    body = await read_body(request, OllamaCreateRequest)
    derived = _derive(_manager(request), body.model_name, _fields(body))
    statuses = [{"status": f"using the weights of {derived.base}"}, {"status": "writing manifest"},
                {"status": "success"}]  # fmt: skip
    if body.stream is False:
        return JSONResponse(statuses[-1])

    async def lines() -> AsyncIterator[bytes]:
        for status in statuses:
            yield json.dumps(status).encode() + b"\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.post("/copy", response_class=Response, **doc("ollama", body=OllamaCopyRequest, ok_media=None,
                                                       errors=(*BODY, 404)))  # fmt: skip
async def copy(request: Request) -> Response:
    """A derived model named ``destination`` with ``source``'s settings; 200 with an empty body."""
    body = await read_body(request, OllamaCopyRequest)
    _manager(request).derive(body.destination, body.source)
    return Response(status_code=200)


def show(derived: DerivedModel, shown: dict[str, Any]) -> dict[str, Any]:
    """/api/show's answer for a derived model: its base's (``shown``), with its own parameters, system
    prompt, messages, license and Modelfile."""
    own = settings_fields(derived.base, derived.settings, derived.license_texts)
    return {**shown, **own, "details": {**shown["details"], "parent_model": derived.base}}


def tag(derived: DerivedModel, base_entry: dict[str, Any]) -> dict[str, Any]:
    """A derived model's /api/tags entry: its base's, under its own name."""
    details = {**base_entry["details"], "parent_model": derived.base}
    return {**base_entry, "name": derived.name, "model": derived.name, "details": details}
