"""Forwarding a request to a remote OpenAI-compatible server, streaming passed through chunk by chunk.

Failover (to the next remote, or back to this machine) happens only before the client has seen a byte:
connection errors and timeouts, 429/502/503/504, 401/403 (a key misconfigured here is not the
client's fault), and the remote being found down (by its probe, or its breaker opening) while the
request waits for its first byte: that ends the wait at once rather than at the first-byte timeout.
400/404/422 are the client's to see and go back as they are. A remote dying mid-stream ends the stream
with an OpenAI-shaped error event and ``[DONE]``; a stream that ends without a finish_reason counts as
failed the same way. A client that disconnects closes the upstream request.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from appliance.remotes.pool import Remote
from appliance.remotes.upstream import Failover, first_chunk, open_response
from server.record import RequestRecord
from server.sse import frame

_DONE = b"data: [DONE]"


@dataclass
class Exchange:
    """One forwarded request, written into its record while the answer goes to the client (first and
    last byte, the remote's token counts, how it ended); ``on_end`` gets the record once, when the client
    has the whole answer (or it failed, or the client left)."""

    record: RequestRecord = field(default_factory=RequestRecord)
    on_end: Callable[[RequestRecord], None] | None = None

    def first_byte(self) -> None:
        self.record.kind = "generation"
        self.record.first_token_s = self.record.last_token_s = time.monotonic()

    def last_byte(self) -> None:
        self.record.last_token_s = time.monotonic()

    def usage(self, usage: dict[str, Any] | None) -> None:
        """The remote's token counts, when it said."""
        if usage is not None:
            self.record.prompt_tokens = usage.get("prompt_tokens")
            self.record.generated_tokens = usage.get("completion_tokens")

    def end(self, status: str) -> None:
        self.record.status = status
        if self.on_end is not None:
            self.on_end(self.record)
            self.on_end = None


def _usage(event: bytes) -> dict[str, Any] | None:
    """The token counts in an SSE event or a JSON body, if it has them."""
    if b'"usage"' not in event:
        return None
    try:
        data = json.loads(event.removeprefix(b"data: ") if event.startswith(b"data: ") else event)
    except ValueError:
        return None
    usage = data.get("usage") if isinstance(data, dict) else None
    return usage if isinstance(usage, dict) else None


def error_event(message: str) -> bytes:
    body = {"error": {"message": message, "type": "server_error", "param": None, "code": "remote_failed"}}
    return frame(body)


async def forward(
    client: httpx.AsyncClient,
    remote: Remote,
    path: str,
    body: dict[str, Any],
    request: Request,
    on_first_byte: Any = None,
    exchange: Exchange | None = None,
) -> Response:
    """Send ``body`` to ``remote``; the client's response, or Failover before any byte of it. A stream
    asks the remote for its token counts (``include_usage``) and passes them on only if the client did."""
    t = remote.settings.timeouts
    exchange = exchange or Exchange()
    started = time.monotonic()
    asked = body.get("stream_options")
    options: dict[str, Any] = asked if isinstance(asked, dict) else {}
    client_wants_usage = bool(options.get("include_usage"))
    if body.get("stream"):
        body = {**body, "stream_options": {**options, "include_usage": True}}
    down = remote.down_signal()
    response = await open_response(client, remote, path, body, down)
    if not body.get("stream"):
        answer = await _whole(remote, response, request, t.first_byte_s, exchange, down)
        if on_first_byte is not None and exchange.record.first_token_s is not None:
            on_first_byte(exchange.record.first_token_s - started)
        return answer
    chunks = response.aiter_raw()
    first = await first_chunk(response, chunks, remote, down)
    if response.status_code != 200:  # an error for the client (400/404/422): as it is
        rest = b"".join([first, *[c async for c in chunks]])
        await response.aclose()
        exchange.end(str(response.status_code))
        return Response(rest, status_code=response.status_code, media_type="application/json")
    exchange.first_byte()
    if on_first_byte is not None:
        on_first_byte(time.monotonic() - started)
    relay = _relay(remote, response, chunks, first, t.between_chunks_s, exchange, client_wants_usage)
    return StreamingResponse(relay, media_type="text/event-stream")


async def _whole(
    remote: Remote,
    response: httpx.Response,
    request: Request,
    timeout_s: float,
    exchange: Exchange,
    down: asyncio.Event,
) -> Response:
    """A non-streamed answer, read while watching for the client going away and the remote going down."""
    reading = asyncio.ensure_future(response.aread())
    try:
        deadline = time.monotonic() + timeout_s
        while not reading.done():
            if await request.is_disconnected():
                reading.cancel()
                exchange.end("cancelled")
                return Response(status_code=499)
            if time.monotonic() > deadline:
                reading.cancel()
                remote.breaker.failure()
                raise Failover(f"{remote.name}: no answer within {timeout_s:g} s")
            if down.is_set():
                reading.cancel()
                raise Failover(
                    f"{remote.name} went down while the request waited for it: {remote.down_reason}"
                )
            await asyncio.wait({reading}, timeout=0.25)
        content = reading.result()
    except httpx.HTTPError as exc:
        remote.breaker.failure()
        raise Failover(f"{remote.name}: {type(exc).__name__}") from None
    finally:
        await response.aclose()
    remote.breaker.success()
    exchange.first_byte()
    media = response.headers.get("content-type", "application/json")
    if response.status_code == 200 or media.startswith("application/json"):
        exchange.usage(_usage(content) if response.status_code == 200 else None)
        exchange.end("ok" if response.status_code == 200 else str(response.status_code))
        return Response(content, status_code=response.status_code, media_type=media)
    exchange.end("502")
    return JSONResponse({"error": {"message": content.decode(errors="replace")[:500], "type": "server_error",
                                   "param": None, "code": "remote_failed"}}, status_code=502)  # fmt: skip


async def _relay(
    remote: Remote,
    response: httpx.Response,
    chunks: AsyncIterator[bytes],
    first: bytes,
    gap_s: float,
    exchange: Exchange,
    pass_usage: bool,
) -> AsyncIterator[bytes]:
    """SSE events as they come, ``[DONE]`` held back until the stream is known to have finished; the
    usage-only event the client did not ask for is kept for the log line and not passed on."""
    buffer, finished, status = first, False, "error"
    try:
        while True:
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                if event.strip() == _DONE:
                    continue
                if b'"finish_reason":"' in event.replace(b" ", b""):
                    finished = True
                usage = _usage(event)
                if usage is not None:
                    exchange.usage(usage)
                    if not pass_usage and b'"choices":[]' in event.replace(b" ", b""):
                        continue
                exchange.last_byte()
                yield event + b"\n\n"
            try:
                buffer += await asyncio.wait_for(anext(chunks), gap_s)
            except StopAsyncIteration:
                break
            except (TimeoutError, httpx.HTTPError) as exc:
                remote.breaker.failure()
                why = (
                    "stopped answering" if isinstance(exc, TimeoutError) else f"failed ({type(exc).__name__})"
                )
                yield error_event(f"the remote {remote.name} {why} in the middle of the answer")
                yield _DONE + b"\n\n"
                return
        if not finished:
            remote.breaker.failure()
            yield error_event(f"the remote {remote.name} ended the stream before the answer was complete")
        else:
            status = "ok"
        yield _DONE + b"\n\n"
    except (GeneratorExit, asyncio.CancelledError):
        status = "cancelled"  # the client went away
        raise
    finally:
        exchange.end(status)
        await response.aclose()
