"""What every request to a remote shares, whether its answer is passed through as bytes (the OpenAI
routes) or read as events (RemoteBackend): when to fail over, how long to wait, and giving up at once
when the remote is found down while the request waits for its first byte."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

import httpx

from appliance.errors import ApplianceError
from appliance.remotes.pool import Remote

# Before the first byte these go to the next remote (or back here): a remote that is overloaded or
# restarting, and 401/403 (a key misconfigured here is not the client's fault). 400/404/422 are the
# client's to see.
FAILOVER_STATUS = frozenset({401, 403, 429, 502, 503, 504})
_T = TypeVar("_T")


class Failover(Exception):
    """The remote cannot answer this request; nothing was sent to the client yet."""


class RemoteFailed(ApplianceError):
    """A remote failed after its answer began (the link cut, it crashed, it stopped answering); the
    client sees it as the last event of its stream, in its dialect's shape."""

    status = 502
    error_type = "server_error"
    code = "remote_failed"


class RemoteRejected(ApplianceError):
    """A remote refused the request as the client's fault (400/404/422): the client sees its message and
    status, in its dialect's shape, with no failover."""

    error_type = "invalid_request_error"

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status
        self.code = "model_not_found" if status == 404 else None


def request_timeout(remote: Remote) -> httpx.Timeout:
    """The httpx timeout for one request to ``remote`` (the first-byte and between-chunks limits are
    enforced around it)."""
    t = remote.settings.timeouts
    return httpx.Timeout(
        connect=t.connect_s,
        read=max(t.first_byte_s, t.between_chunks_s),
        write=t.connect_s + 10,
        pool=t.connect_s,
    )


async def unless_down(step: Awaitable[_T], remote: Remote, down: asyncio.Event, timeout_s: float) -> _T:
    """``step``'s result; Failover as soon as ``down`` is set (the remote was found down meanwhile), and
    TimeoutError after ``timeout_s``. The step is cancelled either way (its connection closes)."""
    task = asyncio.ensure_future(step)
    waiter = asyncio.ensure_future(down.wait())
    try:
        done, _ = await asyncio.wait({task, waiter}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if task in done:
        return task.result()
    if waiter in done:
        raise Failover(f"{remote.name} went down while the request waited for it: {remote.down_reason}")
    raise TimeoutError


async def open_response(
    client: httpx.AsyncClient, remote: Remote, path: str, body: dict[str, object], down: asyncio.Event
) -> httpx.Response:
    """The remote's response to ``body`` (headers read, the body still to come), or Failover: it could
    not be reached in time, was found down (``down``, its down_signal) meanwhile, or answered a status in
    FAILOVER_STATUS."""
    assert remote.base_url is not None
    t = remote.settings.timeouts
    upstream = client.build_request(
        "POST", remote.base_url + path, json=body, headers=remote.headers(), timeout=request_timeout(remote)
    )
    try:
        sending = client.send(upstream, stream=True)
        response = await unless_down(sending, remote, down, t.first_byte_s + t.connect_s)
    except (httpx.HTTPError, TimeoutError) as exc:
        remote.breaker.failure()
        raise Failover(f"{remote.name}: {type(exc).__name__} {exc}".strip()) from None
    if response.status_code in FAILOVER_STATUS:
        await response.aclose()
        remote.breaker.failure()
        raise Failover(f"{remote.name} answered {response.status_code}")
    return response


async def first_chunk(
    response: httpx.Response, chunks: AsyncIterator[bytes], remote: Remote, down: asyncio.Event
) -> bytes:
    """The first piece of ``response``'s body, within the first-byte timeout; else the response is closed
    and Failover raised (the remote is found down meanwhile, fails, or says nothing in time). The remote's
    breaker counts the outcome. The answer may still be an error for the client (its status says)."""
    try:
        first = await unless_down(anext(chunks), remote, down, remote.settings.timeouts.first_byte_s)
    except Failover:
        await response.aclose()
        raise
    except (StopAsyncIteration, httpx.HTTPError, TimeoutError) as exc:
        await response.aclose()
        remote.breaker.failure()
        raise Failover(f"{remote.name}: no first byte ({type(exc).__name__})") from None
    remote.breaker.success()
    return first
