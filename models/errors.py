"""What every source of models (the Hugging Face Hub, Ollama's registry, a plain HTTP file) can report
alike, so the layers above decide on the type of an error, never on its message."""

from __future__ import annotations


class NotFound(Exception):
    """The repo, revision, model, tag or file asked for does not exist where it was looked for (or is
    private and the credentials do not reach it: the Hub answers both the same way). Each source's own
    error class has a subclass that also derives from this one."""
