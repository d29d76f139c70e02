"""What the TUI draws from: one frozen snapshot of the daemon per refresh, and the banner for any error
the client reports instead."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from client import AuthFailed, ClientError, DaemonUnreachable, NotADaemon


@dataclass(frozen=True)
class Snapshot:
    """The daemon's answers of one refresh, taken whole or not at all, so the panes never mix two."""

    status: dict[str, Any]
    models: list[dict[str, Any]]
    remotes: dict[str, Any]
    logs: list[dict[str, Any]]


def banner_text(error: ClientError, url: str) -> str:
    """The banner for a refresh that failed: every client error has one, none stops the app."""
    if isinstance(error, AuthFailed):
        why = f"{url}: the API key is missing or wrong (--api-key)"
        return f"The daemon is not answering ({why}); retrying every second."
    if isinstance(error, (DaemonUnreachable, NotADaemon)):
        return f"The daemon is not answering ({error}); retrying every second."
    return f"The daemon answered an error ({error}); retrying every second."
