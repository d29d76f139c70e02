"""What is installed on this machine: the store, the embedded model, other tools' stores."""

from __future__ import annotations

from appliance.config import state_dirs
from models.catalog import LocalModel, local_models
from models.store import Store


def store() -> Store:
    return Store(state_dirs().models)


def installed_models(served: LocalModel | None = None) -> list[LocalModel]:
    """Every servable model, ``served`` (the model `serve` was given) first."""
    return local_models(state_dirs().models, served)
