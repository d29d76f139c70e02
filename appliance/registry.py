"""Which backend serves which model id."""

from __future__ import annotations

from collections.abc import Iterator

from appliance.engine.local import LocalLlamaBackend
from appliance.errors import ModelNotFound


class ModelRegistry:
    """The served models by id. The first one added answers requests that name no model."""

    def __init__(self) -> None:
        self._backends: dict[str, LocalLlamaBackend] = {}

    def add(self, backend: LocalLlamaBackend) -> None:
        self._backends[backend.model_id] = backend

    def __iter__(self) -> Iterator[LocalLlamaBackend]:
        return iter(self._backends.values())

    def get(self, model: str | None) -> LocalLlamaBackend:
        """The backend for ``model``; raises ModelNotFound naming the models that exist."""
        if not model:
            default = next(iter(self._backends.values()), None)
            if default is None:
                raise ModelNotFound("no model is being served")
            return default
        backend = self._backends.get(model)
        if backend is None:
            served = ", ".join(sorted(self._backends)) or "none"
            raise ModelNotFound(f"the model '{model}' does not exist (served: {served})", param="model")
        return backend

    def close(self) -> None:
        for backend in self._backends.values():
            backend.close()
