"""Forwarding a request to a remote OpenAI-compatible server, streaming passed through chunk by chunk.

Failover (to the next remote, or back to this machine) happens only before the client has seen a byte:
connection errors and timeouts, 429/502/503/504, and 401/403 (a key misconfigured here is not the
client's fault). 400/404/422 are the client's to see and go back as they are. A remote dying mid-stream
ends the stream with an OpenAI-shaped error event and ``[DONE]``; a stream that ends without a
finish_reason counts as failed the same way. A client that disconnects closes the upstream request.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from appliance.remotes.pool import Remote

_FAILOVER_STATUS = {401, 403, 429, 502, 503, 504}
_DONE = b"data: [DONE]"


class Failover(Exception):
    """The remote cannot answer this request; nothing was sent to the client yet."""


def error_event(message: str) -> bytes:
    body = {"error": {"message": message, "type": "server_error", "param": None, "code": "remote_failed"}}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


async def forward(
    client: httpx.AsyncClient,
    remote: Remote,
    path: str,
    body: dict[str, Any],
    request: Request,
    on_first_byte: Any = None,
) -> Response:
    """Send ``body`` to ``remote``; the client's response, or Failover before any byte of it."""
    assert remote.base_url is not None
    t = remote.settings.timeouts
    timeout = httpx.Timeout(connect=t.connect_s, read=max(t.first_byte_s, t.between_chunks_s),
                            write=t.connect_s + 10, pool=t.connect_s)  # fmt: skip
    started = time.monotonic()
    upstream = client.build_request("POST", remote.base_url + path, json=body, headers=remote.headers(),
                                    timeout=timeout)  # fmt: skip
    try:
        response = await asyncio.wait_for(client.send(upstream, stream=True), t.first_byte_s + t.connect_s)
    except (httpx.HTTPError, TimeoutError) as exc:
        remote.breaker.failure()
        raise Failover(f"{remote.name}: {type(exc).__name__} {exc}".strip()) from None
    if response.status_code in _FAILOVER_STATUS:
        await response.aclose()
        remote.breaker.failure()
        raise Failover(f"{remote.name} answered {response.status_code}")
    if not body.get("stream"):
        return await _whole(remote, response, request, t.first_byte_s, started, on_first_byte)
    chunks = response.aiter_raw()
    try:
        first = await asyncio.wait_for(anext(chunks), t.first_byte_s)
    except (StopAsyncIteration, httpx.HTTPError, TimeoutError) as exc:
        await response.aclose()
        remote.breaker.failure()
        raise Failover(f"{remote.name}: no first byte ({type(exc).__name__})") from None
    remote.breaker.success()
    if response.status_code != 200:  # an error for the client (400/404/422): as it is
        rest = b"".join([first, *[c async for c in chunks]])
        await response.aclose()
        return Response(rest, status_code=response.status_code, media_type="application/json")
    if on_first_byte is not None:
        on_first_byte(time.monotonic() - started)
    return StreamingResponse(
        _relay(remote, response, chunks, first, t.between_chunks_s), media_type="text/event-stream"
    )


async def _whole(
    remote: Remote,
    response: httpx.Response,
    request: Request,
    timeout_s: float,
    started: float,
    on_first_byte: Any,
) -> Response:
    """A non-streamed answer, read while watching for the client going away."""
    reading = asyncio.ensure_future(response.aread())
    try:
        deadline = time.monotonic() + timeout_s
        while not reading.done():
            if await request.is_disconnected():
                reading.cancel()
                return Response(status_code=499)
            if time.monotonic() > deadline:
                reading.cancel()
                remote.breaker.failure()
                raise Failover(f"{remote.name}: no answer within {timeout_s:g} s")
            await asyncio.wait({reading}, timeout=0.25)
        content = reading.result()
    except httpx.HTTPError as exc:
        remote.breaker.failure()
        raise Failover(f"{remote.name}: {type(exc).__name__}") from None
    finally:
        await response.aclose()
    remote.breaker.success()
    if on_first_byte is not None:
        on_first_byte(time.monotonic() - started)
    media = response.headers.get("content-type", "application/json")
    if response.status_code == 200 or media.startswith("application/json"):
        return Response(content, status_code=response.status_code, media_type=media)
    return JSONResponse({"error": {"message": content.decode(errors="replace")[:500], "type": "server_error",
                                   "param": None, "code": "remote_failed"}}, status_code=502)  # fmt: skip


async def _relay(
    remote: Remote, response: httpx.Response, chunks: AsyncIterator[bytes], first: bytes, gap_s: float
) -> AsyncIterator[bytes]:
    """SSE events as they come, ``[DONE]`` held back until the stream is known to have finished."""
    buffer, finished = first, False
    try:
        while True:
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                if event.strip() == _DONE:
                    continue
                if b'"finish_reason":"' in event.replace(b" ", b""):
                    finished = True
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
        yield _DONE + b"\n\n"
    finally:
        await response.aclose()
