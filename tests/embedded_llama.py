"""The embedded default model loaded in process, for tests of the engine's parts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from appliance.engine.params import LoadOptions
from models.embedded import embedded_model_path


@contextmanager
def embedded_llama(**options: Any) -> Iterator[Any]:
    """A LlamaModel of the embedded model with ``options`` (LoadOptions fields); one thread unless they
    say otherwise (no spinning on a busy machine)."""
    from appliance.engine.llama import LlamaModel

    path = embedded_model_path()
    assert path is not None, "the [default-model] extra is needed"
    loaded = LlamaModel(path, LoadOptions(**{"n_threads": 1, "n_threads_batch": 1, **options}))
    try:
        yield loaded
    finally:
        loaded.close()
