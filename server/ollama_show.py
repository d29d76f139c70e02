"""/api/show's answer, as Ollama gives it: the model's real chat template, its settings as a Modelfile and
as PARAMETER lines, its GGUF metadata in ``model_info``, its details and capabilities."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from appliance import modelfile
from appliance.capabilities import described_capabilities
from appliance.config import PerModelSettings
from appliance.derived import parameters
from appliance.manager import ModelManager
from models.catalog import LocalModel
from models.gguf_header import ArrayInfo, read_gguf_file

# The chat template has its own field; long arrays (the vocabulary, the merges) Ollama shows as null
# unless asked for `verbose`, as here (their length is all this reader keeps of them).
_NOT_IN_MODEL_INFO = frozenset({"tokenizer.chat_template"})


def iso(timestamp: float) -> str:
    """A time as Ollama writes it (RFC 3339, UTC, ``Z``)."""
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat().replace("+00:00", "Z")


def details(manager: ModelManager, model: LocalModel) -> dict[str, Any]:
    """Ollama's ``details`` of ``model``: format, family, parameter size and quantization."""
    info = manager.plan_for(model).model
    params = info.n_params
    size = f"{params / 1e9:.1f}B" if params >= 1e9 else f"{params / 1e6:.0f}M"
    return {"parent_model": "", "format": "gguf", "family": info.architecture,
            "families": [info.architecture], "parameter_size": size,
            "quantization_level": info.quant}  # fmt: skip


def settings_fields(
    source: str, settings: PerModelSettings, license_texts: Sequence[str] = ()
) -> dict[str, Any]:
    """The fields a model's settings give /api/show: its Modelfile (``FROM source``), its PARAMETER lines
    as Ollama's ``parameters`` text, its system prompt, MESSAGE turns and license."""
    params = parameters(settings)
    messages = [(m.role, m.content) for m in settings.messages]
    text = modelfile.render(source, system=settings.system, parameters=params, messages=messages,
                            license_texts=list(license_texts))  # fmt: skip
    width = max((len(name) for name, _ in params), default=0)
    return {
        "modelfile": text,
        "parameters": "\n".join(f"{name:<{width}} {_value(value)}" for name, value in params),
        "system": settings.system or "",
        "messages": [{"role": role, "content": content} for role, content in messages],
        "license": "\n".join(license_texts),
    }


def _value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else str(value)


def show(manager: ModelManager, model: LocalModel) -> dict[str, Any]:
    """/api/show's answer for the installed ``model``. GGUFError or OSError when its file is unreadable."""
    metadata = read_gguf_file(model.path).metadata
    template_file = manager.template_file(model)
    if template_file is not None:
        template = template_file.read_text(encoding="utf-8")
    else:
        own = metadata.get("tokenizer.chat_template")
        template = own if isinstance(own, str) else ""
    model_info: dict[str, Any] = {
        key: None if isinstance(value, ArrayInfo) else value
        for key, value in metadata.items()
        if key not in _NOT_IN_MODEL_INFO
    }
    model_info["general.parameter_count"] = manager.plan_for(model).model.n_params
    described = described_capabilities(model.path, manager.settings.dirs.data, template_file)
    return {
        **settings_fields(str(model.path), manager.settings.per_model(model.id, model.name)),
        "template": template,
        "details": details(manager, model),
        "model_info": model_info,
        "capabilities": described["capabilities"],
        # Ours, beside model_info: how the capabilities come about, and what `appliance eval` measured.
        "appliance": {"declared": described["declared"], "measured": described["measured"]},
        "modified_at": iso(model.path.stat().st_mtime),
    }
