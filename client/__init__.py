"""One typed client of the daemon's HTTP API, for everything that talks to a running daemon: the TUI,
`appliance chat`, `appliance eval --url`, `appliance remotes` and `appliance bench` (whose load generator
speaks to any OpenAI-compatible server through its OpenAI routes).

It is the one place that knows the routes, the API key header, SSE framing, and the error shapes the
daemon answers in (OpenAI's, Ollama's, Anthropic's), and it turns every failure into a typed exception
(:mod:`client.errors`). It imports none of the project's packages (only httpx and the standard library),
so the core and the TUI may both use it without importing each other.
"""

from client.daemon import AsyncDaemonClient, SyncDaemonClient, delta_text
from client.errors import (
    AuthFailed,
    ClientError,
    ContextFull,
    DaemonUnreachable,
    ErrorReply,
    NotADaemon,
)

__all__ = [
    "AsyncDaemonClient",
    "AuthFailed",
    "ClientError",
    "ContextFull",
    "DaemonUnreachable",
    "ErrorReply",
    "NotADaemon",
    "SyncDaemonClient",
    "delta_text",
]
