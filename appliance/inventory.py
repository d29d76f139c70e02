"""What is installed on this machine: the store, the embedded model, other tools' stores."""

from __future__ import annotations

from appliance.config import state_dirs
from models.catalog import LocalModel, local_models
from models.discover import discover
from models.store import Store


def store() -> Store:
    return Store(state_dirs().models)


def discovered_models() -> list[LocalModel]:
    """Models other tools (Hugging Face cache, Ollama, LM Studio) hold here, marked external."""
    return [
        LocalModel(m.name, m.path, m.source, m.quant, m.size_bytes, m.sha256, m.origin, external=True)
        for m in discover()
    ]


def installed_models(*, discover_external: bool = True) -> list[LocalModel]:
    """Every servable model: the store's, the embedded one, and (unless turned off) other tools'."""
    external = discovered_models() if discover_external else []
    return local_models(state_dirs().models, discovered=external)


def installed_named(name: str, *, discover_external: bool) -> list[LocalModel]:
    """The installed model ``name:tag``, or every installed tag of a bare ``name`` (other tools' models
    only when ``discover_external``: the caller passes ``settings.store.discover``)."""
    installed = installed_models(discover_external=discover_external)
    return [m for m in installed if m.id == name] or [m for m in installed if m.name == name]
