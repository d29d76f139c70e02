"""What is installed on this machine: the store, the embedded model, other tools' stores."""

from __future__ import annotations

from appliance.config import Settings
from models.catalog import LocalModel, local_models
from models.discover import discover
from models.store import Store


def store(settings: Settings) -> Store:
    """The model store in the state directories ``settings`` name."""
    return Store(settings.dirs.models)


def discovered_models() -> list[LocalModel]:
    """Models other tools (Hugging Face cache, Ollama, LM Studio) hold here, marked external."""
    return [
        LocalModel(m.name, m.path, m.source, m.quant, m.size_bytes, m.sha256, m.origin, external=True)
        for m in discover()
    ]


def installed_models(settings: Settings) -> list[LocalModel]:
    """Every servable model: the store's, the embedded one, and (unless ``store.discover`` is off) other
    tools'."""
    external = discovered_models() if settings.store.discover else []
    return local_models(settings.dirs.models, discovered=external)


def installed_named(settings: Settings, name: str) -> list[LocalModel]:
    """The installed model ``name:tag``, or every installed tag of a bare ``name`` (other tools' models
    only when ``store.discover`` is on)."""
    installed = installed_models(settings)
    return [m for m in installed if m.id == name] or [m for m in installed if m.name == name]
