"""The one Server-Sent Events writer: the framing of every event (OpenAI's `data: {...}`, Anthropic's
`event:` lines, the proxy's error event), `[DONE]`, errors and cancellation."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi.responses import StreamingResponse

from appliance.errors import ApplianceError, EngineFailure
from server.errors import appliance_error_body

log = logging.getLogger(__name__)


def frame(payload: dict[str, Any], event: str | None = None) -> bytes:
    """One SSE event: ``data: JSON``, after an ``event: NAME`` line when ``event`` is given (Anthropic's)."""
    head = f"event: {event}\n".encode() if event else b""
    return (
        head + b"data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"
    )


def sse_response(
    chunks: AsyncIterator[dict[str, Any]], on_close: Callable[[], None], *, done: bool = True
) -> StreamingResponse:
    """Stream ``chunks`` as SSE. A failure mid-stream ends it with an error event and ``[DONE]``.
    ``done=False``: no ``[DONE]`` (llama-server's own endpoints, /infill, end with their last chunk).

    ``on_close`` runs however the stream ends, including when the client disconnects (Starlette then
    cancels this generator), so the engine stops generating for nobody.
    """

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in chunks:
                yield frame(chunk)
        except ApplianceError as exc:
            yield frame(appliance_error_body(exc))
        except Exception as exc:  # never leave a client hanging on a half-sent stream
            log.exception("stream failed")
            yield frame(appliance_error_body(EngineFailure(f"the stream failed: {exc}")))
        finally:
            on_close()
        if done:
            yield b"data: [DONE]\n\n"

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
