"""Stopping the daemon cleanly: SIGTERM or Ctrl-C drains, a second one exits at once.

uvicorn alone closes the listening socket, lets open connections finish for as long as they take, then
cancels what is left (a stream then ends mid-event, an unanswered request gets a bare 500) and re-raises the
signal, so the process dies of it. The appliance drains instead:

1. at the signal, no new work: the listener closes (uvicorn), and a request that still arrives on an open
   connection gets 503 `shutting_down` in its API's error shape;
2. requests in flight get up to `server.shutdown_timeout_s` to finish;
3. then the engine ends them (running generations finish with finish_reason "length", as at max_tokens;
   waiting ones get 503), and a few seconds later whatever still runs (a proxied stream, a pull's progress)
   is cancelled and its response closed in its own framing: an error event and `[DONE]`, an error line;
4. uvicorn closes the models and the process exits 0.

Under systemd (Type=notify, packaging/systemd/) the daemon says READY=1 once it listens, so that
`systemctl start` (and `appliance service install`) returns only then, and fails when the daemon exits
before; STOPPING=1 when it starts to drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Generator
from types import FrameType

import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from appliance.errors import ShuttingDown
from appliance.manager import ModelManager
from server.errors import appliance_error_body, dialect, dialect_error_body, error_response

log = logging.getLogger("appliance.daemon")

CUT_GRACE_S = 3.0  # after the engine's cut, for the last events to reach the clients
_POLL_S = 0.05
_STOPPING = "the server is shutting down; retry once it is back"
_CUT = "the server shut down before the answer was complete"


class Lifecycle:
    """The requests in flight and the drain, shared by the signal handler, DrainGuard and the lifespan."""

    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager
        self.draining = False
        self._requests: set[asyncio.Future[None]] = set()  # the app's task of each request in flight
        self._drain: asyncio.Task[None] | None = None

    @property
    def in_flight(self) -> int:
        return len(self._requests)

    def start_drain(self, timeout_s: float) -> None:
        """Refuse new requests from now on and give those in flight ``timeout_s`` to finish (on the
        event loop; a second call does nothing)."""
        if self.draining:
            return
        self.draining = True
        log.info(
            "draining: new requests are refused; %d in flight have up to %g s to finish",
            self.in_flight,
            timeout_s,
        )
        self._drain = asyncio.create_task(self._run_drain(timeout_s))

    async def drained(self) -> None:
        """Until the drain is over (at once when none started)."""
        if self._drain is not None:
            await asyncio.shield(self._drain)

    async def _run_drain(self, timeout_s: float) -> None:
        started = time.monotonic()
        at_start = self.in_flight
        cut = 0
        if not await self._until_idle(started + timeout_s):
            cut = self.in_flight
            self.manager.cut()
            if not await self._until_idle(time.monotonic() + CUT_GRACE_S):
                for request in list(self._requests):
                    request.cancel()
                await self._until_idle(time.monotonic() + 1.0)
        log.info(
            "drained in %.1f s: %d of %d requests in flight finished, %d cut short",
            time.monotonic() - started,
            at_start - cut,
            at_start,
            cut,
        )

    async def _until_idle(self, deadline: float) -> bool:
        while self._requests and time.monotonic() < deadline:
            await asyncio.sleep(_POLL_S)
        return not self._requests

    def track(self, request: asyncio.Future[None]) -> None:
        self._requests.add(request)

    def untrack(self, request: asyncio.Future[None]) -> None:
        self._requests.discard(request)


class DrainGuard:
    """Outermost middleware: counts each request in flight (running it as its own task, so the drain can
    cut it), refuses new ones while draining, and ends a cut response in its API's own shape."""

    def __init__(self, app: ASGIApp, lifecycle: Lifecycle) -> None:
        self.app = app
        self.lifecycle = lifecycle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.lifecycle.draining:
            await _refuse(scope, receive, send)
            return
        media_type: bytes | None = None  # set once the response started
        complete = False

        async def watched_send(message: Message) -> None:
            nonlocal media_type, complete
            if message["type"] == "http.response.start":
                media_type = dict(message.get("headers", [])).get(b"content-type", b"")
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                complete = True
            await send(message)

        request = asyncio.ensure_future(self.app(scope, receive, watched_send))
        self.lifecycle.track(request)
        try:
            await asyncio.wait({request})
        except asyncio.CancelledError:
            request.cancel()
            raise
        finally:
            self.lifecycle.untrack(request)
        if not (request.cancelled() and self.lifecycle.draining):
            request.result()  # its own exception, if any, goes to uvicorn as before
            return
        if media_type is None:
            await _refuse(scope, receive, send)
        elif not complete:
            tail = _closing_tail(scope["path"], media_type)
            await send({"type": "http.response.body", "body": tail, "more_body": False})


async def _refuse(scope: Scope, receive: Receive, send: Send) -> None:
    response = error_response(scope["path"], ShuttingDown(_STOPPING), headers={"Connection": "close"})
    await response(scope, receive, send)


def _closing_tail(path: str, media_type: bytes) -> bytes:
    """The last bytes of a stream cut by the shutdown, in its framing: OpenAI's error event and [DONE],
    Anthropic's error event, or an NDJSON error line (Ollama's and the pulls')."""
    error = ShuttingDown(_CUT)
    if media_type.startswith(b"text/event-stream"):
        if dialect(path) == "anthropic":
            data = json.dumps(dialect_error_body(path, error.status, error))
            return f"event: error\ndata: {data}\n\n".encode()
        return b"data: " + json.dumps(appliance_error_body(error)).encode() + b"\n\ndata: [DONE]\n\n"
    if media_type.startswith(b"application/x-ndjson"):
        return json.dumps({"status": "error", "error": _CUT}).encode() + b"\n"
    return b""


def sd_notify(state: str) -> bool:
    """Tell the service manager ``state`` (``READY=1``, ``STOPPING=1``) over $NOTIFY_SOCKET, as
    sd_notify(3) does; False where there is no manager listening (not started by systemd, or not
    Type=notify). Never raises: a manager that went away must not take the daemon with it."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address or not hasattr(socket, "AF_UNIX"):
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("could not tell systemd %s: %s", state, exc)
        return False
    return True


class DaemonServer(uvicorn.Server):
    """uvicorn's server with the appliance's signals: SIGTERM and SIGINT drain (a second one exits at
    once), SIGHUP calls ``on_reload``. After a drain the process exits 0, where uvicorn would re-raise the
    signal and die of it."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, on_reload: Callable[[], None]) -> None:
        super().__init__(config)
        self._app = app
        self._on_reload = on_reload

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:  # listening: /health answers from now on
            sd_notify("READY=1")

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # Signals can only be handled in the main thread (not when the tests run the server in another).
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        wanted = [signal.SIGINT, signal.SIGTERM]
        if hasattr(signal, "SIGHUP"):  # not on Windows
            wanted.append(signal.SIGHUP)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in wanted}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum == getattr(signal, "SIGHUP", None):
            _soon(self._on_reload)
            return
        if self.should_exit:
            # Written straight to the file descriptor: the logging lock may be held by the code this
            # handler interrupted.
            os.write(2, b"appliance: second signal: exiting now, without waiting for requests\n")
            os._exit(128 + signum)
        lifecycle: Lifecycle = self._app.state.lifecycle
        timeout_s = self._app.state.settings.server.shutdown_timeout_s
        # uvicorn's own bound comes after ours, as a backstop: by then every request has ended.
        self.config.timeout_graceful_shutdown = round(timeout_s + CUT_GRACE_S + 3)
        self.should_exit = True
        sd_notify("STOPPING=1")
        _soon(lambda: lifecycle.start_drain(timeout_s))


def _soon(callback: Callable[[], None]) -> None:
    """Run ``callback`` on the event loop; from a signal handler, which runs on the loop's thread
    between two of its steps."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not serving yet, or any more
        return
    loop.call_soon_threadsafe(callback)
