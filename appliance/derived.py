"""Derived models (Ollama's /api/create and /api/copy): a new name over an installed model's file with
settings of its own, served through the base's loaded model (no copy of the GGUF). Each is one JSON file
in the state directory, so it survives a restart; deleting one never touches the base's file."""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from appliance.config import PerModelSettings
from appliance.errors import InvalidRequest, ModelNotFound

log = logging.getLogger(__name__)

PARAMETERS = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "seed", "stop", "num_ctx")
"""Ollama's PARAMETER names a derived model may set; any other is refused by name."""

SUPPORTED = "FROM, SYSTEM, PARAMETER (" + ", ".join(PARAMETERS) + "), MESSAGE, LICENSE"

_OWN_FIELDS = ("system", "messages", *PARAMETERS)


def canonical(name: str) -> str:
    """A model name as derived models are kept: Ollama's implied ``:latest`` tag left off."""
    return name.removesuffix(":latest")


@dataclass(frozen=True)
class DerivedModel:
    name: str
    base: str  # the installed model id whose file it serves from
    settings: PerModelSettings  # its own, over the base's `[models."ID"]`
    license_texts: tuple[str, ...] = ()
    created_s: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "base": self.base, "license": list(self.license_texts),
                "created_s": self.created_s,
                "settings": self.settings.model_dump(mode="json", exclude_unset=True)}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DerivedModel:
        return cls(data["name"], data["base"], PerModelSettings.model_validate(data.get("settings", {})),
                   tuple(data.get("license", ())), float(data.get("created_s", 0)))  # fmt: skip

    def parameters(self) -> list[tuple[str, Any]]:
        """Its PARAMETER lines as Ollama shows them (one per stop sequence)."""
        return parameters(self.settings)


def parameters(settings: PerModelSettings) -> list[tuple[str, Any]]:
    """The PARAMETER lines of a model with ``settings``, as Ollama shows them (one per stop sequence)."""
    out: list[tuple[str, Any]] = []
    for name in PARAMETERS:
        value = getattr(settings, name)
        if name == "stop":
            out += [("stop", stop) for stop in value]
        elif value is not None:
            out.append((name, value))
    return out


def derived_settings(
    inherited: PerModelSettings,
    *,
    system: str | None = None,
    parameters: dict[str, Any] | None = None,
    messages: list[dict[str, Any]] | None = None,
) -> PerModelSettings:
    """The settings of a model made from a source with ``inherited`` settings: the source's, with
    ``system`` and ``messages`` replaced and ``parameters`` over its own. Raises InvalidRequest naming
    every parameter this appliance does not carry out, or a value that is not good."""
    unknown = sorted(set(parameters or {}) - set(PARAMETERS))
    if unknown:
        raise InvalidRequest(
            f"unsupported parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
            f"(supported: {', '.join(PARAMETERS)})",
            param="parameters",
        )
    values = {k: v for k, v in inherited.model_dump(exclude_unset=True).items() if k in _OWN_FIELDS}
    for name, value in (parameters or {}).items():
        values[name] = [value] if name == "stop" and isinstance(value, str) else value
    if system is not None:
        values["system"] = system
    if messages is not None:
        values["messages"] = [{"role": m.get("role"), "content": m.get("content") or ""} for m in messages]
    try:
        return PerModelSettings.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise InvalidRequest(f"invalid model settings: {problems}", param="parameters") from None


def merged(base: PerModelSettings, own: PerModelSettings) -> PerModelSettings:
    """What a derived model's requests start from: its own settings over its base's (not the base's
    aliases: those name the base)."""
    values = base.model_dump(exclude_unset=True)
    values.pop("aliases", None)
    values.update(own.model_dump(exclude_unset=True))
    return PerModelSettings.model_validate(values)


class DerivedModels:
    """The derived models kept in ``directory``, one JSON file each, read once and written through."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._models: dict[str, DerivedModel] | None = None

    def _all(self) -> dict[str, DerivedModel]:
        if self._models is None:
            self._models = {}
            for path in sorted(self.directory.glob("*.json")) if self.directory.is_dir() else []:
                try:
                    model = DerivedModel.from_json(json.loads(path.read_text()))
                except (OSError, ValueError, KeyError, ValidationError) as exc:
                    log.warning("skipping the derived model in %s: %s", path, exc)
                    continue
                self._models[model.name] = model
        return self._models

    def __iter__(self) -> Any:
        return iter(list(self._all().values()))

    def get(self, name: str | None) -> DerivedModel | None:
        return self._all().get(canonical(name)) if name else None

    def _path(self, name: str) -> Path:
        return self.directory / (urllib.parse.quote(name, safe="") + ".json")

    def save(self, model: DerivedModel) -> None:
        """Keep ``model`` (replacing one of the same name), written whole or not at all."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(model.name)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(model.to_json(), indent=1))
        os.replace(temporary, path)
        self._all()[model.name] = model

    def remove(self, name: str) -> bool:
        """Forget the derived model ``name``; False if there is none."""
        model = self.get(name)
        if model is None:
            return False
        self._path(model.name).unlink(missing_ok=True)
        del self._all()[model.name]
        return True


def derive(
    models: DerivedModels,
    name: str,
    source: str,
    *,
    base_of: Callable[[str], str],
    taken: Callable[[str], bool],
    system: str | None = None,
    parameters: dict[str, Any] | None = None,
    messages: list[dict[str, Any]] | None = None,
    license_texts: list[str] | None = None,
) -> DerivedModel:
    """Make (or replace) the derived model ``name`` from ``source``, an installed model (``base_of``
    gives its id, raising ModelNotFound) or another derived one (whose settings it starts from), and keep
    it. Raises InvalidRequest for a name ``taken`` by an installed model or alias, or a file path as the
    source; ModelNotFound (naming ``source``) for a source that does not exist."""
    name = canonical(name.strip())
    if not name:
        raise InvalidRequest("model is required: the new model's name", param="model")
    if taken(name):
        raise InvalidRequest(
            f"'{name}' is an installed model or an alias; a derived model needs a name of its own",
            param="model",
        )
    if source.startswith(("/", "./", "../", "~")) or source.endswith(".gguf"):
        raise InvalidRequest(
            f"FROM {source}: a file is not a model here; `appliance import {source}` first, then FROM "
            "its name",
            param="from",
        )
    parent = models.get(source)
    try:
        base = base_of(parent.base if parent is not None else source)
    except ModelNotFound:
        raise ModelNotFound(f"model '{source}' not found", param="from") from None
    if canonical(source) == name and parent is None:
        raise InvalidRequest(f"'{name}' cannot be made from itself", param="from")
    inherited = parent.settings if parent is not None else PerModelSettings()
    settings = derived_settings(inherited, system=system, parameters=parameters, messages=messages)
    own_license = parent.license_texts if parent is not None and license_texts is None else ()
    model = DerivedModel(name, base, settings, tuple(license_texts or own_license))
    models.save(model)
    return model
