"""Cheap checks on a file that should be GGUF, before handing it to llama.cpp."""

from __future__ import annotations

from pathlib import Path

GGUF_MAGIC = b"GGUF"


def check_gguf(path: Path) -> str | None:
    """None if ``path`` looks like a GGUF file; otherwise why it does not, in one line."""
    if not path.exists():
        return f"no such file: {path}"
    if not path.is_file():
        return f"not a file: {path}"
    try:
        with path.open("rb") as f:
            head = f.read(8)
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    if head[:4] != GGUF_MAGIC:
        return f"not a GGUF file: {path}"
    if len(head) < 8:
        return f"truncated GGUF file: {path}"
    return None
